#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcsec::fuzzing::file_symbols(data));
