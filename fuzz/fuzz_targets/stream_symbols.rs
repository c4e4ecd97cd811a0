#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcsec::fuzzing::stream_symbols(data));
