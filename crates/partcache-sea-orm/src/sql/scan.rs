//! One pass over a statement's tokens, at every depth: the tables it names as
//! relations (after `FROM`, `JOIN`, a comma of a `FROM` list, `TABLE`, and first in a
//! parenthesized join such as `FROM (a JOIN b ON ...)`), the functions it
//! calls, and whether it locks rows.
//!
//! Relations are found by position, not by clause, so a subquery counts wherever it
//! stands: the select list, `WHERE`, `HAVING`, `GROUP BY`, `ORDER BY`, `JOIN ... ON`,
//! a derived table, a CTE, any part of a `UNION`/`EXCEPT`/`INTERSECT`, a custom SQL
//! expression. A CTE's own name is counted as a table too (a harmless extra version).

use super::functions::{is_not_a_call, is_read_only_builtin};
use super::lex::Token;
use crate::key::normalize_table;

/// What [`scan`] found.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Scan {
    /// Tables named as relations, normalized, in order of appearance, with repeats.
    pub(crate) tables: Vec<String>,
    /// Functions called that are not known read-only built-ins, normalized.
    pub(crate) calls: Vec<String>,
    /// `FOR UPDATE`, `FOR SHARE`, `FOR NO KEY UPDATE`, `FOR KEY SHARE`, `LOCK IN SHARE MODE`.
    pub(crate) locking: bool,
    /// Something stood where a relation must be and was not understood.
    pub(crate) opaque: bool,
}

/// The state of one parenthesis depth.
#[derive(Default, Clone, Copy)]
struct Frame {
    /// Inside a `FROM` list (a comma starts another relation).
    from: bool,
    /// Between `WITH` and the query it introduces (a name followed by `(` there is a
    /// CTE's column list).
    with_list: bool,
}

/// Reads a possibly qualified name at `at`: its last component (normalized), its
/// qualifier if any, and the index after it.
pub(crate) fn name_at(tokens: &[Token], at: usize) -> Option<(String, Option<String>, usize)> {
    let mut i = at;
    let mut qualifier = None;
    loop {
        let last = tokens.get(i)?.name()?.to_string();
        i += 1;
        if tokens.get(i) == Some(&Token::Symbol('.'))
            && tokens.get(i + 1).and_then(Token::name).is_some()
        {
            qualifier = Some(normalize_table(&last));
            i += 1;
            continue;
        }
        return Some((normalize_table(&last), qualifier, i));
    }
}

fn word_is(tokens: &[Token], at: Option<usize>, words: &[&str]) -> bool {
    at.and_then(|i| tokens.get(i))
        .is_some_and(|t| words.iter().any(|w| t.is_word(w)))
}

/// Scans one statement.
pub(crate) fn scan(tokens: &[Token]) -> Scan {
    let mut out = Scan::default();
    let mut frames = vec![Frame::default()];
    let mut expect = false;
    let mut i = 0;
    while i < tokens.len() {
        let t = &tokens[i];
        let prev = i.checked_sub(1);
        // A parenthesis where a relation must be: a derived table or a parenthesized
        // join (`FROM (a JOIN b ON ...)`), whose first relation comes next.
        let relation_group = expect && t == &Token::Symbol('(');
        if expect {
            expect = false;
            if t.is_word("ONLY") || t.is_word("LATERAL") {
                expect = true;
                i += 1;
                continue;
            }
            if let Some((name, qualifier, next)) = name_at(tokens, i) {
                if tokens.get(next) == Some(&Token::Symbol('(')) {
                    // A table function (`FROM generate_series(1, 3)`).
                    call(&mut out, name, qualifier);
                } else {
                    out.tables.push(name);
                }
                i = next;
                continue;
            }
            if t != &Token::Symbol('(') {
                out.opaque = true;
            }
        }
        let Some(top) = frames.last_mut() else {
            out.opaque = true;
            return out;
        };
        match t {
            Token::Symbol('(') if relation_group => {
                frames.push(Frame {
                    from: true,
                    with_list: false,
                });
                expect = !word_is(tokens, Some(i + 1), &["SELECT", "WITH", "VALUES", "TABLE"]);
            }
            Token::Symbol('(') => frames.push(Frame::default()),
            Token::Symbol(')') => {
                if frames.len() > 1 {
                    frames.pop();
                } else {
                    out.opaque = true;
                }
            }
            Token::Symbol(',') if top.from => expect = true,
            Token::Word(w) => match w.to_ascii_uppercase().as_str() {
                // `a IS [NOT] DISTINCT FROM b` compares, it names no relation.
                "FROM"
                    if !(word_is(tokens, prev, &["DISTINCT"])
                        && word_is(tokens, i.checked_sub(2), &["IS", "NOT"])) =>
                {
                    top.from = true;
                    expect = true;
                }
                "JOIN" => {
                    top.from = true;
                    expect = true;
                }
                // The `TABLE t` query form.
                "TABLE"
                    if prev.is_none()
                        || tokens.get(i - 1) == Some(&Token::Symbol('('))
                        || word_is(
                            tokens,
                            prev,
                            &["UNION", "EXCEPT", "INTERSECT", "ALL", "DISTINCT"],
                        ) =>
                {
                    expect = true;
                }
                "WITH" => top.with_list = true,
                "SELECT" | "VALUES" | "INSERT" | "UPDATE" | "DELETE" | "MERGE" => {
                    top.with_list = false;
                    top.from = false;
                }
                "WHERE" | "GROUP" | "HAVING" | "ORDER" | "LIMIT" | "OFFSET" | "UNION"
                | "EXCEPT" | "INTERSECT" | "WINDOW" | "RETURNING" | "FETCH" | "SET" => {
                    top.from = false
                }
                "FOR" => {
                    top.from = false;
                    if word_is(tokens, Some(i + 1), &["UPDATE", "SHARE", "NO", "KEY"]) {
                        out.locking = true;
                    }
                }
                "LOCK" if word_is(tokens, Some(i + 1), &["IN"]) => out.locking = true,
                _ => {}
            },
            _ => {}
        }
        if tokens.get(i + 1) == Some(&Token::Symbol('('))
            && let Some(name) = t.name()
            && !(matches!(t, Token::Word(_)) && is_not_a_call(name))
        {
            // Where the qualified name starts, and what stands before it.
            let mut start = i;
            while start >= 2
                && tokens[start - 1] == Token::Symbol('.')
                && tokens[start - 2].name().is_some()
            {
                start -= 2;
            }
            let before = start.checked_sub(1);
            let column_list = word_is(tokens, before, &["INTO", "TABLE", "VIEW"])
                || (frames.last().is_some_and(|f| f.with_list)
                    && (word_is(tokens, before, &["WITH", "RECURSIVE"])
                        || before.is_some_and(|b| tokens[b] == Token::Symbol(','))));
            if !column_list {
                let qualifier =
                    (start < i).then(|| normalize_table(tokens[i - 2].name().unwrap_or("")));
                call(&mut out, normalize_table(name), qualifier);
            }
        }
        i += 1;
    }
    out
}

/// Records a call of `name`, unless it is a read-only built-in (unqualified, or in the
/// system schema).
fn call(out: &mut Scan, name: String, qualifier: Option<String>) {
    let system = qualifier
        .as_deref()
        .is_none_or(|q| q == "pg_catalog" || q == "main");
    if !(system && is_read_only_builtin(&name)) {
        out.calls.push(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::lex::tokenize;
    use sea_orm::DbBackend;

    fn scanned(sql: &str) -> Scan {
        let lexed = tokenize(sql, DbBackend::Postgres);
        assert!(!lexed.doubtful);
        scan(&lexed.statements[0])
    }

    fn tables(sql: &str) -> Vec<String> {
        let mut t = scanned(sql).tables;
        t.sort();
        t.dedup();
        t
    }

    #[test]
    fn subqueries_anywhere_are_found() {
        let cases = [
            (
                r#"SELECT "p"."id" FROM "product" AS "p" GROUP BY "p"."id" HAVING COUNT(*) > (SELECT COUNT(*) FROM "category")"#,
                vec!["category", "product"],
            ),
            (
                r#"SELECT * FROM "product" ORDER BY (SELECT "name" FROM "category" WHERE "category"."id" = "product"."category_id")"#,
                vec!["category", "product"],
            ),
            (
                r#"SELECT * FROM "product" GROUP BY (SELECT 1 FROM "category" LIMIT 1)"#,
                vec!["category", "product"],
            ),
            (
                r#"SELECT * FROM "product" LEFT JOIN "category" ON "category"."id" IN (SELECT "id" FROM "tag")"#,
                vec!["category", "product", "tag"],
            ),
            (
                r#"SELECT (SELECT MAX("id") FROM "category") AS "m" FROM "product""#,
                vec!["category", "product"],
            ),
            (
                r#"WITH "c" ("id") AS (SELECT "id" FROM "category") SELECT * FROM "product", "c""#,
                vec!["c", "category", "product"],
            ),
            (
                r#"SELECT "id" FROM "product" UNION SELECT "id" FROM "category" EXCEPT (SELECT "id" FROM "tag")"#,
                vec!["category", "product", "tag"],
            ),
            (
                r#"SELECT * FROM (SELECT * FROM (SELECT * FROM "deep") AS "a") AS "b", "other" JOIN "third" ON TRUE"#,
                vec!["deep", "other", "third"],
            ),
            (
                "SELECT * FROM s.t1, ONLY t2 CROSS JOIN LATERAL (SELECT 1 FROM t3) x",
                vec!["t1", "t2", "t3"],
            ),
            ("TABLE t", vec!["t"]),
            (
                "SELECT * FROM (a JOIN b ON a.id = b.id) WHERE a.x = 1",
                vec!["a", "b"],
            ),
            (
                "SELECT * FROM ((s.a AS x LEFT JOIN b ON TRUE) JOIN c ON TRUE), d",
                vec!["a", "b", "c", "d"],
            ),
            (
                "SELECT * FROM (VALUES (1), (2)) AS v, (TABLE t) AS u, (WITH w AS (SELECT 1) SELECT * FROM w) AS z",
                vec!["t", "w"],
            ),
            ("SELECT a IS DISTINCT FROM b FROM t", vec!["t"]),
        ];
        for (sql, expected) in cases {
            assert_eq!(tables(sql), expected, "{sql}");
            let s = scanned(sql);
            assert!(
                !s.opaque && s.calls.is_empty() && !s.locking,
                "{sql}: {s:?}"
            );
        }
    }

    #[test]
    fn calls_and_locks() {
        let s =
            scanned("SELECT my_fn(id), lower(name), pg_catalog.upper(x), public.lower(y) FROM t");
        assert_eq!(s.calls, vec!["my_fn", "lower"]);
        assert!(scanned("SELECT * FROM t FOR UPDATE").locking);
        assert!(scanned("SELECT * FROM t FOR NO KEY UPDATE OF t SKIP LOCKED").locking);
        assert!(scanned("SELECT * FROM t FOR SHARE").locking);
        assert_eq!(
            scanned("SELECT * FROM generate_series(1, 2)").calls,
            Vec::<String>::new()
        );
        assert_eq!(scanned("SELECT * FROM f(1)").calls, vec!["f"]);
        assert!(scanned("SELECT SUBSTRING(x FROM 2) FROM t").opaque);
        assert_eq!(
            scanned(r#"INSERT INTO "p" ("a") VALUES (CAST(? AS varchar(3)))"#).calls,
            Vec::<String>::new()
        );
    }
}
