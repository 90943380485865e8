//! Secret key files in the data directory (the development token key, the
//! audit checkpoint key): hex text, mode 0600, made once. Two processes
//! starting together agree on one key (the file is created exclusively and
//! the loser reads the winner's).

use rand::RngCore;
use std::io::Write;
use std::path::Path;

/// Reads the key at `path` (at least `len` bytes), or makes a random one
/// of `len` bytes there if the file does not exist.
pub fn load_or_create(path: &Path, len: usize) -> Result<Vec<u8>, String> {
    match std::fs::read_to_string(path) {
        Ok(s) => {
            let key = hex::decode(s.trim()).map_err(|_| {
                format!(
                    "{} is not a hex key; delete it to make a new one",
                    path.display()
                )
            })?;
            if key.len() < len {
                return Err(format!(
                    "{} holds a key shorter than {len} bytes; delete it to make a new one",
                    path.display()
                ));
            }
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create data directory {}: {e}", dir.display()))?;
            }
            let mut key = vec![0u8; len];
            rand::rng().fill_bytes(&mut key);
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            match opts.open(path) {
                Ok(mut f) => {
                    f.write_all(hex::encode(&key).as_bytes())
                        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                    Ok(key)
                }
                // Someone else created it meanwhile: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    load_or_create(path, len)
                }
                Err(e) => Err(format!("cannot create {}: {e}", path.display())),
            }
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}
