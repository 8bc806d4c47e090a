//! What the SQL reader knows of the schema beyond the text: the base tables of views
//! (learnt from the database, or declared), the tables that share rows through
//! PostgreSQL partitioning or inheritance (learnt), and the functions declared
//! read-only (with the tables they read).

use std::collections::HashMap;

/// The base tables of a view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Bases {
    /// These tables (normalized), with the bases of views over views included.
    Tables(Vec<String>),
    /// The view's definition could not be read: it depends on every table.
    Unknown,
}

/// Declared functions and views.
#[derive(Debug, Clone, Default)]
pub(crate) struct Catalog {
    /// Functions declared read-only, with the tables each reads.
    pub(crate) functions: HashMap<String, Vec<String>>,
    /// Views declared by hand: kept across refreshes, and they win over learnt ones.
    pub(crate) declared_views: HashMap<String, Vec<String>>,
    /// Views learnt from the database's catalog.
    pub(crate) learnt_views: HashMap<String, Bases>,
    /// `(child, parent)` links learnt from the database's catalog: partitions and
    /// inheriting tables.
    pub(crate) inherits: Vec<(String, String)>,
    /// Both kinds of views, closed over views of views.
    views: HashMap<String, Bases>,
    /// Each table linked by `inherits`, with its ancestors and descendants: a select of
    /// a parent reads its children's rows, and a write to either changes rows the
    /// other's selects and entities read.
    related: HashMap<String, Vec<String>>,
}

impl Catalog {
    /// The tables a declared read-only function reads, or `None` when it is not declared.
    pub(crate) fn function(&self, name: &str) -> Option<&[String]> {
        self.functions.get(name).map(Vec::as_slice)
    }

    /// `tables` with the base tables of every view among them added, then the
    /// ancestors and descendants of every partitioned, partition or inheriting table;
    /// `None` when one is a view whose definition could not be read.
    pub(crate) fn expand(&self, tables: &mut Vec<String>) -> Option<()> {
        if !self.views.is_empty() {
            let mut added = Vec::new();
            for table in tables.iter() {
                match self.views.get(table) {
                    Some(Bases::Tables(bases)) => added.extend(bases.iter().cloned()),
                    Some(Bases::Unknown) => return None,
                    None => {}
                }
            }
            tables.extend(added);
        }
        if !self.related.is_empty() {
            let added: Vec<String> = tables
                .iter()
                .filter_map(|t| self.related.get(t))
                .flatten()
                .cloned()
                .collect();
            tables.extend(added);
        }
        Some(())
    }

    /// Recomputes the closed view map from the declared and learnt ones, and the
    /// related tables from the inheritance links.
    pub(crate) fn close(&mut self) {
        self.related = close_inherits(&self.inherits);
        let mut direct: HashMap<String, Bases> = self.learnt_views.clone();
        for (view, bases) in &self.declared_views {
            direct.insert(view.clone(), Bases::Tables(bases.clone()));
        }
        let mut closed = HashMap::with_capacity(direct.len());
        for view in direct.keys() {
            closed.insert(view.clone(), close_one(&direct, view));
        }
        self.views = closed;
    }
}

/// Each table named in `links` (`(child, parent)`), with every table reachable by
/// following links up (its ancestors) or down (its descendants), not sideways: a
/// partition shares no rows with its siblings.
fn close_inherits(links: &[(String, String)]) -> HashMap<String, Vec<String>> {
    let mut up: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut down: HashMap<&str, Vec<&str>> = HashMap::new();
    for (child, parent) in links {
        up.entry(child).or_default().push(parent);
        down.entry(parent).or_default().push(child);
    }
    let reach = |start: &str, step: &HashMap<&str, Vec<&str>>, out: &mut Vec<String>| {
        let mut queue = vec![start.to_string()];
        while let Some(next) = queue.pop() {
            for linked in step.get(next.as_str()).into_iter().flatten() {
                if *linked != start && !out.iter().any(|o| o == linked) {
                    out.push(linked.to_string());
                    queue.push(linked.to_string());
                }
            }
        }
    };
    let mut related = HashMap::new();
    for table in up.keys().chain(down.keys()) {
        let mut out = Vec::new();
        reach(table, &up, &mut out);
        reach(table, &down, &mut out);
        out.sort();
        out.dedup();
        related.insert(table.to_string(), out);
    }
    related
}

/// The bases of `view`, following views of views (a cycle adds nothing new).
fn close_one(direct: &HashMap<String, Bases>, view: &str) -> Bases {
    let mut seen: Vec<String> = vec![view.to_string()];
    let mut queue: Vec<String> = vec![view.to_string()];
    let mut out: Vec<String> = Vec::new();
    while let Some(next) = queue.pop() {
        match direct.get(&next) {
            Some(Bases::Unknown) => return Bases::Unknown,
            Some(Bases::Tables(bases)) => {
                for base in bases {
                    if !seen.contains(base) {
                        seen.push(base.clone());
                        queue.push(base.clone());
                        out.push(base.clone());
                    }
                }
            }
            None => {}
        }
    }
    out.sort();
    Bases::Tables(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_of_views_close_and_declared_win() {
        let mut c = Catalog::default();
        c.learnt_views
            .insert("v1".into(), Bases::Tables(vec!["v2".into(), "a".into()]));
        c.learnt_views
            .insert("v2".into(), Bases::Tables(vec!["b".into(), "v1".into()]));
        c.learnt_views.insert("odd".into(), Bases::Unknown);
        c.declared_views.insert("odd".into(), vec!["c".into()]);
        c.close();
        let mut t = vec!["v1".to_string()];
        c.expand(&mut t).unwrap();
        t.sort();
        assert_eq!(t, ["a", "b", "v1", "v2"]);
        let mut t = vec!["odd".to_string()];
        c.expand(&mut t).unwrap();
        assert_eq!(t, ["odd", "c"]);
        c.declared_views.clear();
        c.close();
        assert_eq!(c.expand(&mut vec!["odd".to_string()]), None);
    }

    #[test]
    fn partitions_relate_to_their_ancestors_and_descendants_only() {
        let mut c = Catalog::default();
        for (child, parent) in [("low", "sales"), ("high", "sales"), ("low_a", "low")] {
            c.inherits.push((child.into(), parent.into()));
        }
        c.close();
        let expanded = |table: &str| {
            let mut t = vec![table.to_string()];
            c.expand(&mut t).unwrap();
            t.sort();
            t
        };
        assert_eq!(expanded("sales"), ["high", "low", "low_a", "sales"]);
        assert_eq!(expanded("low"), ["low", "low_a", "sales"]);
        assert_eq!(expanded("low_a"), ["low", "low_a", "sales"]);
        assert_eq!(expanded("other"), ["other"]);
    }
}
