//! Fuzzes the config loader: any bytes, read as config text, either load
//! (and describe themselves as `host check` does) or fail with an error that
//! names the file. That errors also name a line is checked by
//! `host/tests/bad_input.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stagehost::config::LoadedConfig;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.yml");
    let text = String::from_utf8_lossy(data).into_owned();
    match LoadedConfig::from_source(path, text) {
        Ok(loaded) => {
            let _ = loaded.plan();
        }
        Err(err) => {
            assert_eq!(err.file, path);
            assert!(err.to_string().starts_with("fuzz.yml:"), "{err}");
            assert!(!err.message.is_empty(), "{err}");
        }
    }
});
