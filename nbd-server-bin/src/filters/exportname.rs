//! The exportname filter (nbdkit-exportname-filter(1)): changes what
//! clients are told about export names, for plugins that serve several
//! (the file plugin's `dir=`).
//!
//! - `default-export=NAME`: the export the empty name means (an empty
//!   NAME leaves the choice to the plugin).
//! - `exportname-list=keep|error|empty|defaultonly|explicit`: the list
//!   NBD_OPT_LIST gets: the plugin's (the default), an error, nothing,
//!   the default export alone, or the `exportname=NAME` names (repeatable).
//! - `exportname-strict=true`: only the `exportname=` names may be opened
//!   (the empty name only when `exportname=` lists it).
//! - `exportdesc=keep|none|fixed:STRING|script:SCRIPT`: the descriptions
//!   listed: the plugin's, none, one for all, or what SCRIPT prints when
//!   run by the shell with `$name` set to the export.
//!
//! The underscore spellings of the keys (`default_export`, ...) are
//! accepted too, as nbdkit does.

use std::io::Read as _;
use std::process::{Command, Stdio};
use std::sync::Arc;

use nbd_core::server::backend::{Backend, ConnectionInfo, Error, Result};

use crate::chain::{Below, Filter, FilterHandle, OpenNext};
use crate::params::{parse_bool, Params};

use super::FilterSpec;

pub const FILTER: FilterSpec = FilterSpec {
    name: "exportname",
    params: &[
        ("default-export", "the export the empty name means"),
        ("default_export", "the same as default-export"),
        (
            "exportname-list",
            "what is listed: keep (default), error, empty, defaultonly or explicit",
        ),
        ("exportname_list", "the same as exportname-list"),
        (
            "exportname-strict",
            "only the exportname= names may be opened (default false)",
        ),
        ("exportname_strict", "the same as exportname-strict"),
        (
            "exportname",
            "an export to list, and allow when strict (repeatable)",
        ),
        (
            "exportdesc",
            "descriptions listed: keep (default), none, fixed:STRING or script:SCRIPT",
        ),
    ],
    open: |p, _| Ok(Arc::new(ExportName::from_params(p)?)),
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum List {
    Keep,
    Error,
    Empty,
    DefaultOnly,
    Explicit,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Desc {
    Keep,
    None,
    Fixed(String),
    Script(String),
}

#[derive(Debug)]
struct ExportName {
    /// `None` when unset or empty.
    default: Option<String>,
    list: List,
    strict: bool,
    names: Vec<String>,
    desc: Desc,
}

impl ExportName {
    fn from_params(p: &mut Params) -> std::result::Result<ExportName, String> {
        let alias = p.take("default_export");
        let default = p.take("default-export").or(alias).filter(|d| !d.is_empty());
        let alias = p.take("exportname_list");
        let list = match p.take("exportname-list").or(alias).as_deref() {
            None | Some("keep") => List::Keep,
            Some("error") => List::Error,
            Some("empty") => List::Empty,
            Some("defaultonly" | "default-only") => List::DefaultOnly,
            Some("explicit") => List::Explicit,
            Some(v) => return Err(format!("unrecognized exportname-list mode: {v}")),
        };
        let alias = p.take("exportname_strict");
        let strict = match p.take("exportname-strict").or(alias) {
            None => false,
            Some(v) => parse_bool(&v).map_err(|e| p.err(e))?,
        };
        let names = p.take_all("exportname");
        let desc = match p.take("exportdesc") {
            None => Desc::Keep,
            Some(v) => match v.as_str() {
                "keep" => Desc::Keep,
                "none" => Desc::None,
                _ => {
                    if let Some(s) = v.strip_prefix("fixed:") {
                        Desc::Fixed(s.to_string())
                    } else if let Some(s) = v.strip_prefix("script:") {
                        Desc::Script(s.to_string())
                    } else {
                        return Err(format!("unrecognized exportdesc mode: {v}"));
                    }
                }
            },
        };
        Ok(ExportName {
            default,
            list,
            strict,
            names,
            desc,
        })
    }

    /// The description to list for export `name`, whose own is `own`.
    fn describe(&self, name: &str, own: Option<String>) -> Option<String> {
        match &self.desc {
            Desc::Keep => own,
            Desc::None => None,
            Desc::Fixed(s) => Some(s.clone()),
            Desc::Script(script) => run_script(name, script),
        }
    }

    /// The export the empty name means, as the whole chain from here
    /// down resolves it ("" when nobody says).
    fn resolved_default(&self, next: &Below<'_>, info: &ConnectionInfo) -> Result<String> {
        Ok(self.default_export(next, info)?.unwrap_or_default())
    }
}

/// `name` quoted for the shell.
fn shell_quote(name: &str) -> String {
    format!("'{}'", name.replace('\'', r"'\''"))
}

/// Runs `script` with `$name` set, and returns what it prints (at most
/// 4096 bytes, without one final newline); `None` if it cannot run.
fn run_script(name: &str, script: &str) -> Option<String> {
    let cmd = format!("export name; name={}\n{script}\n", shell_quote(name));
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    let mut out = Vec::new();
    let read = child
        .stdout
        .take()
        .map(|s| s.take(4096).read_to_end(&mut out));
    // The rest of the output, if any, is not wanted.
    drop(child.stdout.take());
    let _ = child.wait();
    if matches!(read, Some(Err(_))) && out.is_empty() {
        return None;
    }
    if out.last() == Some(&b'\n') {
        out.pop();
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

impl Filter for ExportName {
    fn list_exports(
        &self,
        next: &Below<'_>,
        info: &ConnectionInfo,
    ) -> Result<Option<Vec<(String, String)>>> {
        let named = |name: String, own: Option<String>| {
            let d = self.describe(&name, own).unwrap_or_default();
            (name, d)
        };
        match self.list {
            List::Error => Err(Error::new(libc::EPERM, "export list restricted by policy")),
            List::Empty => Ok(Some(Vec::new())),
            List::DefaultOnly => Ok(Some(vec![(
                self.resolved_default(next, info)?,
                String::new(),
            )])),
            List::Explicit => Ok(Some(
                self.names.iter().map(|n| named(n.clone(), None)).collect(),
            )),
            List::Keep => match next.list_exports(info)? {
                Some(list) => Ok(Some(
                    list.into_iter()
                        .map(|(n, d)| named(n, (!d.is_empty()).then_some(d)))
                        .collect(),
                )),
                // No list below: the server would list its -e name, left
                // alone unless descriptions change; then, as nbdkit, the
                // one export listed is the layer below's default.
                None if self.desc == Desc::Keep => Ok(None),
                None => {
                    let name = next.default_export(info)?.unwrap_or_default();
                    Ok(Some(vec![named(name, None)]))
                }
            },
        }
    }

    fn default_export(&self, next: &Below<'_>, info: &ConnectionInfo) -> Result<Option<String>> {
        if self.strict {
            if self.names.iter().any(|n| n.is_empty()) {
                return Ok(Some(self.default.clone().unwrap_or_default()));
            }
            return Err(Error::new(
                libc::ENOENT,
                "default export (\"\") not permitted",
            ));
        }
        match &self.default {
            Some(d) => Ok(Some(d.clone())),
            None => next.default_export(info),
        }
    }

    fn open(
        self: Arc<Self>,
        info: &ConnectionInfo,
        next: &mut OpenNext<'_>,
    ) -> Result<Box<dyn FilterHandle>> {
        let asked = String::from_utf8_lossy(&info.export_name).into_owned();
        if self.strict && !self.names.contains(&asked) {
            return Err(Error::new(
                libc::ENOENT,
                format!("export '{asked}' not found"),
            ));
        }
        // The server resolves the empty name through default_export before
        // opening; a chain opened on "" directly still gets the default.
        match (&self.default, info.export_name.is_empty()) {
            (Some(d), true) => next.open(&ConnectionInfo {
                export_name: d.as_bytes().to_vec(),
                ..info.clone()
            })?,
            _ => next.open(info)?,
        }
        Ok(Box::new(Handle {
            filter: self,
            name: asked,
        }))
    }
}

/// The filter for one connection: the export name it was opened on.
struct Handle {
    filter: Arc<ExportName>,
    name: String,
}

impl FilterHandle for Handle {
    /// NBD_INFO_DESCRIPTION follows `exportdesc=` too.
    fn export_description(&self, next: &dyn Backend) -> Result<Option<String>> {
        let own = match self.filter.desc {
            Desc::Keep => next.export_description()?,
            _ => None,
        };
        Ok(self.filter.describe(&self.name, own))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::testing::info_for;
    use crate::chain::{Chain, Plugin};
    use std::sync::Mutex;

    /// A plugin with exports "a" (default) and "b", that records the
    /// name it was opened on.
    #[derive(Default)]
    struct Two {
        opened: Mutex<Vec<String>>,
    }

    impl Plugin for Two {
        fn list_exports(&self, _: &ConnectionInfo) -> Result<Option<Vec<(String, String)>>> {
            Ok(Some(vec![
                ("a".into(), "first".into()),
                ("b".into(), String::new()),
            ]))
        }
        fn default_export(&self, _: &ConnectionInfo) -> Result<Option<String>> {
            Ok(Some("a".into()))
        }
        fn open(self: Arc<Self>, info: &ConnectionInfo) -> Result<Box<dyn Backend>> {
            self.opened
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(&info.export_name).into_owned());
            Ok(Box::new(crate::plugins::memory::Memory::new(512)))
        }
    }

    fn chain(args: &[(&str, &str)]) -> std::result::Result<(Arc<Chain>, Arc<Two>), String> {
        let mut p = Params::new(
            "exportname",
            args.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        let f = (FILTER.open)(&mut p, false)?;
        p.finish()?;
        let two = Arc::new(Two::default());
        Ok((Arc::new(Chain::new(Arc::clone(&two) as _, vec![f])), two))
    }

    fn info(name: &str) -> ConnectionInfo {
        info_for(1, name, false)
    }

    fn list(c: &Chain) -> Result<Option<Vec<(String, String)>>> {
        c.list_exports(&info(""))
    }

    fn pairs(v: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
        Some(
            v.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        )
    }

    #[test]
    fn list_modes() {
        let (c, _) = chain(&[]).unwrap();
        assert_eq!(list(&c).unwrap(), pairs(&[("a", "first"), ("b", "")]));
        let (c, _) = chain(&[("exportname-list", "error")]).unwrap();
        assert!(list(&c).is_err());
        let (c, _) = chain(&[("exportname-list", "empty")]).unwrap();
        assert_eq!(list(&c).unwrap(), Some(vec![]));
        let (c, _) = chain(&[("exportname_list", "default-only")]).unwrap();
        assert_eq!(list(&c).unwrap(), pairs(&[("a", "")]));
        let (c, _) = chain(&[("exportname-list", "defaultonly"), ("default-export", "b")]).unwrap();
        assert_eq!(list(&c).unwrap(), pairs(&[("b", "")]));
        let (c, _) = chain(&[
            ("exportname-list", "explicit"),
            ("exportname", "x"),
            ("exportname", "y"),
            ("exportdesc", "fixed:hello"),
        ])
        .unwrap();
        assert_eq!(list(&c).unwrap(), pairs(&[("x", "hello"), ("y", "hello")]));
        let (c, _) = chain(&[("exportdesc", "none")]).unwrap();
        assert_eq!(list(&c).unwrap(), pairs(&[("a", ""), ("b", "")]));
        let (c, _) = chain(&[("exportdesc", "script:echo \"<$name>\"")]).unwrap();
        assert_eq!(list(&c).unwrap(), pairs(&[("a", "<a>"), ("b", "<b>")]));
    }

    #[test]
    fn default_and_strict() {
        let (c, two) = chain(&[("default-export", "b")]).unwrap();
        assert_eq!(c.default_export(&info("")).unwrap(), Some("b".into()));
        c.open(info("")).unwrap();
        c.open(info("a")).unwrap();
        assert_eq!(*two.opened.lock().unwrap(), ["b", "a"]);

        let (c, _) = chain(&[("default-export", "")]).unwrap();
        assert_eq!(c.default_export(&info("")).unwrap(), Some("a".into()));

        let (c, _) = chain(&[("exportname-strict", "true"), ("exportname", "b")]).unwrap();
        assert!(c.default_export(&info("")).is_err());
        assert!(c.open(info("a")).is_err());
        c.open(info("b")).unwrap();

        let (c, _) = chain(&[
            ("exportname-strict", "1"),
            ("exportname", ""),
            ("default-export", "b"),
        ])
        .unwrap();
        assert_eq!(c.default_export(&info("")).unwrap(), Some("b".into()));
    }

    #[test]
    fn bad_values() {
        let e = chain(&[("exportname-list", "some")]).err().unwrap();
        assert_eq!(e, "unrecognized exportname-list mode: some");
        let e = chain(&[("exportdesc", "fixed")]).err().unwrap();
        assert_eq!(e, "unrecognized exportdesc mode: fixed");
        let e = chain(&[("exportname-strict", "maybe")]).err().unwrap();
        assert!(e.contains("maybe"), "{e}");
    }

    #[test]
    fn quoting() {
        assert_eq!(
            run_script("it's $x", "printf %s \"$name\""),
            Some("it's $x".into())
        );
    }
}
