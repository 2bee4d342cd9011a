//! For tests of this crate and of the crates built on it (feature `testing`): a three-server
//! JetStream cluster on loopback ports, from Debian's `nats-server` binary.

use std::time::Duration;

use crate::{JobError, Queue, QueueSettings};

/// Three nats-servers with JetStream clustered on loopback ports, each with its own store in a
/// temporary folder; all stopped when dropped.
pub struct NatsCluster {
    servers: Vec<Option<std::process::Child>>,
    ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Start the three servers; an error (no `nats-server` binary, no free port) says why.
    pub fn start() -> Result<NatsCluster, String> {
        let binary = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .ok_or("no nats-server binary (Debian's nats-server package) to start a cluster")?;
        let free = || -> Result<u16, String> {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
            Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
        };
        let mut ports = Vec::new();
        let mut routes = Vec::new();
        for _ in 0..3 {
            ports.push(free()?);
            routes.push(free()?);
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let all_routes = routes.iter().map(|r| format!("nats://127.0.0.1:{r}")).collect::<Vec<_>>().join(",");
        let mut cluster = NatsCluster { servers: Vec::new(), ports, _dir: dir };
        let ports = cluster.ports.clone();
        for (i, (port, route)) in ports.iter().zip(&routes).enumerate() {
            let child = std::process::Command::new(binary)
                .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "--server_name", &format!("s{i}")])
                .arg("-sd")
                .arg(cluster._dir.path().join(format!("s{i}")))
                .args(["--cluster_name", "strix-test", "--cluster", &format!("nats://127.0.0.1:{route}")])
                .args(["--routes", &all_routes])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot start {binary}: {e}"))?;
            cluster.servers.push(Some(child));
        }
        Ok(cluster)
    }

    /// The three servers' URLs, comma-separated, as the queue settings take them.
    pub fn url(&self) -> String {
        self.ports.iter().map(|p| format!("nats://127.0.0.1:{p}")).collect::<Vec<_>>().join(",")
    }

    /// Kill server `i` (0, 1 or 2).
    pub fn stop(&mut self, i: usize) {
        if let Some(mut child) = self.servers[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The queue on this cluster once it takes it: the cluster elects its JetStream leader a few
    /// seconds after it starts, and refuses streams until then.
    pub async fn queue(&self, settings: &QueueSettings, limit: Duration) -> Result<Queue, JobError> {
        let settings = QueueSettings { url: self.url(), ..settings.clone() };
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match Queue::connect(&settings).await {
                Ok(q) => return Ok(q),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
}

impl NatsCluster {
    /// Which of the three servers leads the queue's task stream now (`s0`..`s2`): the one to
    /// stop, so that a test loses the leader and not just a follower.
    pub async fn task_stream_leader(&self, queue: &Queue) -> Option<usize> {
        let mut stream = queue.js.get_stream(&queue.settings.stream).await.ok()?;
        let info = stream.info().await.ok()?;
        info.cluster.as_ref()?.leader.as_ref()?.strip_prefix('s')?.parse().ok()
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        (0..self.servers.len()).for_each(|i| self.stop(i));
    }
}
