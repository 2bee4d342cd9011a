//! Model spec TOML (`strix.toml` beside a bring-your-own ONNX, or a zoo entry).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(spec) = strix_zoo::ModelSpec::from_toml(text, "fuzz.toml") {
        // What a read spec promises is printable and names its model.
        let _ = format!("{spec:?}");
    }
});
