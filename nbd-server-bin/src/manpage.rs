//! The manual pages of the built-in plugins and filters,
//! nbdkit-NAME-plugin(1) and nbdkit-NAME-filter(1), written as POD.
//!
//! Each page combines two sources: the plugin's or filter's declaration
//! (`PLUGIN`/`FILTER` in its file: its name, its magic key and every key
//! with its one-line description) and its prose in `manual.rs` (summary,
//! description, example). The parameter list therefore cannot drift from
//! what the code takes. `make man` runs the `nbdkit-mangen` binary, which
//! writes these pages to target/man/*.pod; pod2man turns them into roff.

use crate::filters::{FilterSpec, FILTERS};
use crate::manual::{self, Prose};
use crate::params::Param;
use crate::plugins::{PluginSpec, PLUGINS};

/// One generated page: its file name without `.pod` (`nbdkit-memory-plugin.1`)
/// and its POD text.
pub struct Page {
    pub file: String,
    pub pod: String,
}

/// Every generated page, or the names of the layers whose prose or
/// parameter descriptions are missing.
pub fn all_pages() -> Result<Vec<Page>, Vec<String>> {
    let mut pages = Vec::new();
    let mut missing = Vec::new();
    for p in PLUGINS {
        match plugin_page(p) {
            Ok(page) => pages.push(page),
            Err(e) => missing.push(e),
        }
    }
    for f in FILTERS {
        match filter_page(f) {
            Ok(page) => pages.push(page),
            Err(e) => missing.push(e),
        }
    }
    if missing.is_empty() {
        Ok(pages)
    } else {
        Err(missing)
    }
}

/// nbdkit-NAME-plugin(1).
pub fn plugin_page(spec: &PluginSpec) -> Result<Page, String> {
    let prose = manual::plugin(spec.name)
        .ok_or_else(|| format!("plugin {}: no entry in manual.rs", spec.name))?;
    check_params(&format!("plugin {}", spec.name), spec.params)?;
    let title = format!("nbdkit-{}-plugin", spec.name);
    let synopsis = match spec.magic {
        Some(m) => format!(
            " nbdkit {} [{m}=]{} [KEY=VALUE ...]",
            spec.name,
            placeholder(m)
        ),
        None if spec.params.is_empty() => format!(" nbdkit {}", spec.name),
        None => format!(" nbdkit {} [KEY=VALUE ...]", spec.name),
    };
    let see_also = "L<nbdkit(1)>,\nL<nbdkit-plugin(3)>,\nL<nbdkit-captive(1)>.";
    Ok(Page {
        file: format!("{title}.1"),
        pod: render(&title, prose, &synopsis, spec.params, spec.magic, see_also),
    })
}

/// nbdkit-NAME-filter(1).
pub fn filter_page(spec: &FilterSpec) -> Result<Page, String> {
    let prose = manual::filter(spec.name)
        .ok_or_else(|| format!("filter {}: no entry in manual.rs", spec.name))?;
    check_params(&format!("filter {}", spec.name), spec.params)?;
    let title = format!("nbdkit-{}-filter", spec.name);
    let synopsis = if spec.params.is_empty() {
        format!(" nbdkit --filter={} PLUGIN [KEY=VALUE ...]", spec.name)
    } else {
        format!(
            " nbdkit --filter={} PLUGIN [FILTER-KEY=VALUE ...]\n        [KEY=VALUE ...]",
            spec.name
        )
    };
    let see_also = "L<nbdkit(1)>,\nL<nbdkit-filter(3)>.";
    Ok(Page {
        file: format!("{title}.1"),
        pod: render(&title, prose, &synopsis, spec.params, None, see_also),
    })
}

/// A declared key with an empty description cannot make a page.
fn check_params(who: &str, params: &[Param]) -> Result<(), String> {
    match params.iter().find(|(_, d)| d.trim().is_empty()) {
        Some((k, _)) => Err(format!("{who}: parameter {k} has no description")),
        None => Ok(()),
    }
}

/// The value's placeholder in a synopsis or an item: `cow-block-size`
/// becomes `COW_BLOCK_SIZE`.
fn placeholder(key: &str) -> String {
    key.to_ascii_uppercase().replace('-', "_")
}

/// Plain text (a one-line parameter description) as POD: `<` and `>`
/// could otherwise start or end a formatting code, and the sentence gets
/// a capital and a full stop.
fn pod_text(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '<' => out.push_str("E<lt>"),
            '>' => out.push_str("E<gt>"),
            _ => out.push(c),
        }
    }
    let mut chars = out.chars();
    let mut sentence = match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect::<String>(),
        None => String::new(),
    };
    if !sentence.ends_with('.') {
        sentence.push('.');
    }
    sentence
}

fn render(
    title: &str,
    prose: &Prose,
    synopsis: &str,
    params: &[Param],
    magic: Option<&str>,
    see_also: &str,
) -> String {
    let mut s = String::new();
    s.push_str(&format!("=head1 NAME\n\n{title} - {}\n\n", prose.summary));
    s.push_str(&format!("=head1 SYNOPSIS\n\n{synopsis}\n\n"));
    s.push_str(&format!(
        "=head1 DESCRIPTION\n\n{}\n\n",
        prose.description.trim()
    ));
    s.push_str("=head1 PARAMETERS\n\n");
    if params.is_empty() {
        s.push_str("This one takes no parameters.\n\n");
    } else {
        s.push_str("=over 4\n\n");
        for (key, help) in params {
            s.push_str(&format!(
                "=item B<{key}=>I<{}>\n\n{}",
                placeholder(key),
                pod_text(help)
            ));
            if magic == Some(*key) {
                s.push_str(&format!(
                    " This is the magic key: C<{key}=> may be left out\nof the command line."
                ));
            }
            s.push_str("\n\n");
        }
        s.push_str("=back\n\n");
    }
    s.push_str("=head1 EXAMPLE\n\n");
    for line in prose.example.trim().lines() {
        s.push_str(&format!(" {line}\n"));
    }
    s.push('\n');
    s.push_str(&format!("=head1 SEE ALSO\n\n{see_also}\n\n"));
    s.push_str(
        "=head1 NOTES\n\nThis page describes the built-in layer of the Rust nbdkit of\n\
         nbd-rs; the parameter list is generated from its declaration in\n\
         the source.\n",
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_layer_has_a_page() {
        let pages = all_pages().unwrap_or_else(|missing| panic!("{missing:#?}"));
        assert_eq!(pages.len(), PLUGINS.len() + FILTERS.len());
    }

    #[test]
    fn no_prose_without_a_layer() {
        for name in manual::plugin_names() {
            assert!(PLUGINS.iter().any(|p| p.name == name), "plugin {name}");
        }
        for name in manual::filter_names() {
            assert!(FILTERS.iter().any(|f| f.name == name), "filter {name}");
        }
    }

    #[test]
    fn empty_description_is_refused() {
        let params: &[Param] = &[("a", "fine"), ("b", " ")];
        assert!(check_params("x", params).unwrap_err().contains("b"));
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(pod_text("a<b"), "AE<lt>b.");
    }
}
