#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sparsecode_fuzz::gguf(data);
});
