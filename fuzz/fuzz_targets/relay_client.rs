#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcsec::fuzzing::relay_client(data));
