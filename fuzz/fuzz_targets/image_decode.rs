//! Image decoding under the decode limits (every format the servers, labelling and training
//! take), whole and reduced (the servers' fast path for JPEG).
#![no_main]
use libfuzzer_sys::fuzz_target;
use strix_vision::DecodeLimits;

fuzz_target!(|data: &[u8]| {
    let Some((which, rest)) = strix_fuzz::pick(data, 2) else { return };
    // Small limits: a header declaring more is refused before its pixels are allocated.
    let limits = DecodeLimits { max_pixels: 4_000_000, max_bytes: 1 << 20 };
    let decoded = if which == 0 {
        strix_vision::decode_bytes(rest, &limits)
    } else {
        strix_vision::decode_bytes_reduced(rest, &limits, &|_, _| 0.2).map(|r| r.image)
    };
    if let Ok(image) = decoded {
        assert!(u64::from(image.width()) * u64::from(image.height()) <= limits.max_pixels);
    }
});
