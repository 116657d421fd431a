//! Plugins: the bottom layer of a backend stack. One file per plugin.
//!
//! Parameters follow nbdkit: `key=value`, plus one bare value that goes to
//! the plugin's "magic" key (`file` for file, `size` for memory).

pub mod file;
pub mod memory;

use std::sync::Arc;

use nbd_core::server::Backend;

/// Parameters as (key, value) pairs, with the bare value assigned to the
/// plugin's magic key.
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    pub fn parse(plugin: &str, magic: &str, args: &[String]) -> Result<Params, String> {
        let mut pairs = Vec::new();
        let mut bare = false;
        for a in args {
            match a.split_once('=') {
                Some((k, v)) if !k.is_empty() && !k.contains('/') => {
                    pairs.push((k.to_string(), v.to_string()))
                }
                _ => {
                    if bare {
                        return Err(format!(
                            "{plugin}: more than one parameter without a key: {a}"
                        ));
                    }
                    bare = true;
                    pairs.push((magic.to_string(), a.clone()));
                }
            }
        }
        Ok(Params { pairs })
    }

    /// Takes the last value of `key`.
    pub fn take(&mut self, key: &str) -> Option<String> {
        let mut v = None;
        self.pairs.retain(|(k, val)| {
            if k == key {
                v = Some(val.clone());
                false
            } else {
                true
            }
        });
        v
    }

    /// Fails on any key left over.
    pub fn finish(self, plugin: &str) -> Result<(), String> {
        match self.pairs.first() {
            None => Ok(()),
            Some((k, _)) => Err(format!("{plugin}: unknown parameter '{k}'")),
        }
    }
}

/// Loads a plugin by name.
pub fn open(name: &str, args: &[String], readonly: bool) -> Result<Arc<dyn Backend>, String> {
    match name {
        "memory" => Ok(Arc::new(memory::Memory::from_params(args)?)),
        "file" => Ok(Arc::new(file::FilePlugin::from_params(args, readonly)?)),
        _ => Err(format!(
            "cannot open plugin \"{name}\": this nbdkit supports only the plugins: file, memory"
        )),
    }
}

/// Parses a size as nbdkit_parse_size does: a non-negative integer with an
/// optional suffix b, k/K, m/M, g/G, t/T, p/P, e/E (powers of 1024),
/// optionally followed by "iB" or "B". At most 2^63-1.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("could not parse size string ({s})");
    let t = s.trim();
    let digits_end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if digits_end == 0 {
        return Err(bad());
    }
    let n: u64 = t[..digits_end].parse().map_err(|_| bad())?;
    let mut suffix = &t[digits_end..];
    let shift = match suffix.chars().next() {
        None => 0,
        Some(c) => {
            suffix = &suffix[1..];
            match c {
                'b' | 'B' if suffix.is_empty() => 0,
                'k' | 'K' => 10,
                'm' | 'M' => 20,
                'g' | 'G' => 30,
                't' | 'T' => 40,
                'p' | 'P' => 50,
                'e' | 'E' => 60,
                _ => return Err(bad()),
            }
        }
    };
    if !(suffix.is_empty() || suffix == "B" || suffix == "iB") || (shift == 0 && !suffix.is_empty())
    {
        return Err(bad());
    }
    let v = n
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size ({s}) exceeds maximum value"))?;
    if v > i64::MAX as u64 {
        return Err(format!("size ({s}) exceeds maximum value"));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("512b"), Ok(512));
        assert_eq!(parse_size("1k"), Ok(1024));
        assert_eq!(parse_size("1K"), Ok(1024));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size("1P"), Ok(1 << 50));
        assert_eq!(parse_size("7E"), Ok(7 << 60));
        assert_eq!(parse_size("9223372036854775807"), Ok(i64::MAX as u64));
        assert!(parse_size("8E").is_err());
        assert!(parse_size("9223372036854775808").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("1X").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("1Gx").is_err());
    }

    #[test]
    fn params() {
        let mut p = Params::parse("m", "size", &["1G".into(), "a=b".into()]).unwrap();
        assert_eq!(p.take("size").as_deref(), Some("1G"));
        assert!(p.finish("m").is_err());
        assert!(Params::parse("m", "size", &["1G".into(), "2G".into()]).is_err());
        let mut p = Params::parse("f", "file", &["/tmp/x=y".into()]).unwrap();
        assert_eq!(p.take("file").as_deref(), Some("/tmp/x=y"));
    }
}
