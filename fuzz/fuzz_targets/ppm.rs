//! FFmpeg's PPM frames, as `strix stream` reads them from its pipe.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut reader = std::io::BufReader::new(data);
    // Frames until the end or the first refusal, as the stream reads them.
    while let Ok(Some(frame)) = strix_stream::read_ppm(&mut reader) {
        assert!(frame.width() > 0 && frame.height() > 0);
    }
});
