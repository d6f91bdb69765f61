//! The file driver's on-disk format: job files, failed records, lock files and the names of
//! files and directories, as anything on a disk might hold them. The first line of the input
//! is a file name, the rest the file's bytes. No parser may panic, and whatever parses must
//! encode back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let (name, bytes) = match input.iter().position(|b| *b == b'\n') {
        Some(i) => (&input[..i], &input[i + 1..]),
        None => (input, &[][..]),
    };
    let name = String::from_utf8_lossy(name);
    queue_file::__fuzz_parsers(bytes, &name);
});
