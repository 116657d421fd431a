//! Command-line parameters of plugins and filters (`key=value`) and the
//! parsers nbdkit gives plugins for their values (`nbdkit_parse_size`,
//! `nbdkit_parse_bool`, `nbdkit_parse_probability`, ...).

/// Parameters of one layer as (key, value) pairs, in command-line order.
pub struct Params {
    name: String,
    pairs: Vec<(String, String)>,
}

/// nbdkit's rule for the key of `key=value`: a letter, then letters,
/// digits, `_`, `.` or `-`. Anything else (`/tmp/a=b`) is a bare value.
pub fn is_config_key(k: &str) -> bool {
    let mut c = k.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic())
        && c.all(|x| x.is_ascii_alphanumeric() || "_.-".contains(x))
}

/// Splits command-line parameters into (key, value) pairs. A bare value
/// (no `key=`, or a key nbdkit would not accept, like `/tmp/a=b`) goes to
/// the plugin's magic key, as in nbdkit (`split f1 f2 f3`); a plugin
/// without one refuses it.
pub fn split_params(
    plugin: &str,
    magic: Option<&str>,
    args: &[String],
) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    for a in args {
        match a.split_once('=') {
            Some((k, v)) if is_config_key(k) => pairs.push((k.to_string(), v.to_string())),
            _ => match magic {
                None => {
                    return Err(format!(
                        "{plugin}: expecting key=value on the command line but got: {a}"
                    ))
                }
                Some(m) => pairs.push((m.to_string(), a.clone())),
            },
        }
    }
    Ok(pairs)
}

impl Params {
    pub fn new(name: &str, pairs: Vec<(String, String)>) -> Params {
        Params {
            name: name.to_string(),
            pairs,
        }
    }

    /// Splits `args` as the plugin `plugin` with magic key `magic` would.
    #[cfg(test)]
    pub fn parse(plugin: &str, magic: &str, args: &[String]) -> Result<Params, String> {
        Ok(Params::new(
            plugin,
            split_params(plugin, Some(magic), args)?,
        ))
    }

    /// Takes the last value of `key`.
    pub fn take(&mut self, key: &str) -> Option<String> {
        self.take_all(key).pop()
    }

    /// Takes every value of `key`, in order.
    pub fn take_all(&mut self, key: &str) -> Vec<String> {
        let mut v = Vec::new();
        self.pairs.retain(|(k, val)| {
            if k == key {
                v.push(val.clone());
                false
            } else {
                true
            }
        });
        v
    }

    /// Takes every pair whose key is one of `keys`, in command-line
    /// order: for keys whose meaning depends on their place among the
    /// others (the partitioning plugin's `alignment=` applies to the files
    /// after it).
    pub fn take_each(&mut self, keys: &[&str]) -> Vec<(String, String)> {
        let mut v = Vec::new();
        self.pairs.retain(|(k, val)| {
            if keys.contains(&k.as_str()) {
                v.push((k.clone(), val.clone()));
                false
            } else {
                true
            }
        });
        v
    }

    /// Takes every pair left, in order: for plugins that accept any key
    /// (the data plugin's `$VAR` variables; tmpdisk and ondemand pass them
    /// on to their command).
    pub fn take_rest(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.pairs)
    }

    /// Takes and parses `key` with `f`; errors are prefixed with the
    /// layer's name and the key.
    pub fn take_with<T>(
        &mut self,
        key: &str,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, String> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => f(&v)
                .map(Some)
                .map_err(|e| format!("{}: {key}: {e}", self.name)),
        }
    }

    /// A size (nbdkit_parse_size).
    pub fn take_size(&mut self, key: &str) -> Result<Option<u64>, String> {
        self.take_with(key, parse_size)
    }

    /// A boolean as nbdkit_parse_bool: 1/true/yes/on, 0/false/no/off.
    pub fn take_bool(&mut self, key: &str) -> Result<Option<bool>, String> {
        self.take_with(key, parse_bool)
    }

    /// One of the listed words.
    pub fn take_enum(&mut self, key: &str, choices: &[&str]) -> Result<Option<String>, String> {
        self.take_with(key, |v| {
            if choices.contains(&v) {
                Ok(v.to_string())
            } else {
                Err(format!(
                    "unknown value '{v}' (expecting one of: {})",
                    choices.join(", ")
                ))
            }
        })
    }

    /// An error naming this layer.
    pub fn err(&self, msg: impl std::fmt::Display) -> String {
        format!("{}: {msg}", self.name)
    }

    /// Fails on any key left over, in nbdkit's words (its plugins' config
    /// callbacks say "unknown parameter 'KEY'", without the plugin's name).
    pub fn finish(self) -> Result<(), String> {
        match self.pairs.first() {
            None => Ok(()),
            Some((k, _)) => Err(format!("unknown parameter '{k}'")),
        }
    }
}

pub fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(format!("could not decipher boolean ({v})")),
    }
}

/// The `size` parameter of a disk that is computed, not stored: required,
/// or 0 when missing if not.
pub fn size_param(p: &mut Params, required: bool) -> Result<u64, String> {
    match p.take_size("size")? {
        Some(s) => Ok(s),
        None if !required => Ok(0),
        None => Err(p.err("the size parameter is required (eg. size=1G)")),
    }
}

/// A declared parameter: its key and a one-line description.
pub type Param = (&'static str, &'static str);

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

/// Parses "N%" or a fraction "0.N" (or "1/N"), as nbdkit_parse_probability.
pub fn parse_probability(v: &str) -> std::result::Result<f64, String> {
    let bad = || format!("could not parse probability: {v}");
    let t = v.trim();
    let p = if let Some(pc) = t.strip_suffix('%') {
        pc.trim().parse::<f64>().map_err(|_| bad())? / 100.0
    } else if let Some((a, b)) = t.split_once('/') {
        let a: f64 = a.trim().parse().map_err(|_| bad())?;
        let b: f64 = b.trim().parse().map_err(|_| bad())?;
        if b == 0.0 {
            return Err(bad());
        }
        a / b
    } else {
        t.parse::<f64>().map_err(|_| bad())?
    };
    if !(0.0..=1.0).contains(&p) || p.is_nan() {
        return Err(format!("probability out of range (0..1 or 0%..100%): {v}"));
    }
    Ok(p)
}

/// Parses a delay: seconds (fractional allowed) or with a unit suffix
/// `ms`, `us`, `ns`, `s`.
pub fn parse_duration(v: &str) -> std::result::Result<std::time::Duration, String> {
    let t = v.trim();
    let (num, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = t.strip_suffix("ns") {
        (n, 1e-9)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else {
        (t, 1.0)
    };
    match num.trim().parse::<f64>() {
        Ok(f) if f >= 0.0 && f.is_finite() => Ok(std::time::Duration::from_secs_f64(f * scale)),
        _ => Err(format!("could not parse duration: {v}")),
    }
}

#[cfg(test)]
/// The keys a source file takes as string literals: the first argument
/// of `take`, `take_all`, `take_size`, `take_bool`, `take_enum`,
/// `take_with`, and of curl's `opt(p, "...")`; `size` and `seed` where
/// the shared helpers that take them are called.
pub fn literal_keys(src: &str) -> std::collections::BTreeSet<String> {
    let mut keys = std::collections::BTreeSet::new();
    for (i, _) in src.match_indices("take") {
        let rest = src[i + 4..].trim_start_matches(|c: char| c.is_ascii_lowercase() || c == '_');
        if let Some(r) = rest.strip_prefix('(') {
            if let Some(r) = r.trim_start().strip_prefix('"') {
                keys.insert(r[..r.find('"').unwrap()].to_string());
            }
        }
    }
    // take_each(&["a", "b"]): every key listed.
    for (i, _) in src.match_indices("take_each(&[") {
        let r = &src[i + 12..];
        let list = &r[..r.find(']').unwrap()];
        for (j, part) in list.split('"').enumerate() {
            if j % 2 == 1 {
                keys.insert(part.to_string());
            }
        }
    }
    // Keys taken by shared helpers.
    for (helper, key) in [("size_param(p", "size"), ("seed_param(p", "seed")] {
        if src.contains(helper) {
            keys.insert(key.to_string());
        }
    }
    for (i, _) in src.match_indices("opt(p, \"") {
        let r = &src[i + 8..];
        keys.insert(r[..r.find('"').unwrap()].to_string());
    }
    keys
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
        assert!(p.finish().is_err());
        let mut p = Params::parse("s", "file", &["a".into(), "b".into()]).unwrap();
        assert_eq!(p.take_all("file"), ["a", "b"]);
        assert!(split_params("zero", None, &["1G".into()]).is_err());
        let mut p = Params::parse("f", "file", &["/tmp/x=y".into()]).unwrap();
        assert_eq!(p.take("file").as_deref(), Some("/tmp/x=y"));
    }
}
