//! Writing tables between marker comments: `<!-- bench-all:NAME begin -->` and
//! `<!-- bench-all:NAME end -->`, each on a line of its own. What lies between is replaced; the
//! rest of the document is left byte for byte.

use std::collections::BTreeMap;

fn begin(name: &str) -> String {
    format!("<!-- bench-all:{name} begin -->")
}

fn end(name: &str) -> String {
    format!("<!-- bench-all:{name} end -->")
}

/// `doc` with `body` between the `name` markers, or `None` if the document has no such
/// markers. An `end` before its `begin`, or a marker twice, is an error.
pub(crate) fn one(doc: &str, name: &str, body: &str) -> Result<Option<String>, String> {
    let (begin, end) = (begin(name), end(name));
    let Some(start) = doc.find(&begin) else {
        return Ok(None);
    };
    if doc[start + begin.len()..].contains(&begin) {
        return Err(format!("{begin} appears twice"));
    }
    let after_begin = start + begin.len();
    let stop = doc[after_begin..]
        .find(&end)
        .map(|i| after_begin + i)
        .ok_or_else(|| format!("{begin} without {end}"))?;
    let mut out = String::with_capacity(doc.len() + body.len());
    // Blank lines around the body, so a table in it starts a block of its own.
    out.push_str(&doc[..after_begin]);
    out.push_str("\n\n");
    out.push_str(body.trim_matches('\n'));
    out.push_str("\n\n");
    out.push_str(&doc[stop..]);
    Ok(Some(out))
}

/// Every table put in; returns the document and the names that had no markers.
pub(crate) fn all(
    doc: &str,
    tables: &BTreeMap<String, String>,
) -> Result<(String, Vec<String>), String> {
    let mut doc = doc.to_owned();
    let mut missing = Vec::new();
    for (name, body) in tables {
        match one(&doc, name, body)? {
            Some(next) => doc = next,
            None => missing.push(name.clone()),
        }
    }
    Ok((doc, missing))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_text_between_the_markers_is_replaced_and_nothing_else() {
        let doc =
            "# T\n\n<!-- bench-all:a begin -->\nold\nlines\n<!-- bench-all:a end -->\n\nafter\n";
        assert_eq!(
            one(doc, "a", "| new |\n").unwrap().unwrap(),
            "# T\n\n<!-- bench-all:a begin -->\n\n| new |\n\n<!-- bench-all:a end -->\n\nafter\n"
        );
        assert_eq!(one(doc, "b", "x").unwrap(), None);
    }

    #[test]
    fn a_begin_without_its_end_is_an_error() {
        assert_eq!(
            one("<!-- bench-all:a begin -->\n", "a", "x").unwrap_err(),
            "<!-- bench-all:a begin --> without <!-- bench-all:a end -->"
        );
    }

    #[test]
    fn tables_without_markers_are_reported() {
        let mut tables = BTreeMap::new();
        tables.insert("a".to_owned(), "1".to_owned());
        tables.insert("z".to_owned(), "2".to_owned());
        let (doc, missing) = all(
            "<!-- bench-all:a begin -->\n<!-- bench-all:a end -->\n",
            &tables,
        )
        .unwrap();
        assert_eq!(
            doc,
            "<!-- bench-all:a begin -->\n\n1\n\n<!-- bench-all:a end -->\n"
        );
        assert_eq!(missing, vec!["z".to_owned()]);
    }
}
