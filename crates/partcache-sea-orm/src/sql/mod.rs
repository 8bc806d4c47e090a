//! The SQL reader: what a statement reads and writes, from its text. It serves the
//! statements that reach the connection without a statement object
//! (`execute_unprepared`, raw `Statement`s), the one fact the statement audit does not
//! give (which row an `UPDATE`/`DELETE` targets), and, for every cached select, the
//! tables read in places the statement audit does not look (see [`scan`]).
//!
//! Every answer errs towards "more invalidation": a statement this module does not
//! fully understand is [`RawEffect::Unknown`] (the caller then bumps the global epoch),
//! a select it does not fully understand is not cached, a call of a function not known
//! to be read-only is a write of unknown tables, and a `WHERE` clause that is not a
//! plain conjunction of `column = placeholder` is not a row identity (the caller then
//! invalidates the whole table).

mod functions;
mod lex;
mod scan;

use sea_orm::DbBackend;

use crate::catalog::Catalog;
use crate::key::normalize_table;
use lex::{Token, tokenize};
use scan::{name_at, scan};

/// What a piece of raw SQL does to tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RawEffect {
    /// Reads only (as far as the text shows).
    Read,
    /// Writes these tables (normalized names), and nothing this module cannot see.
    Writes(Vec<String>),
    /// Anything else: DDL, transaction control, procedures, unparseable text. The
    /// caller must assume every table changed.
    Unknown,
}

impl RawEffect {
    /// The effect of writing `written` (in any order, with repeats): the one place the
    /// table list is put in canonical form, for the SQL reader and the statement audit.
    pub(crate) fn from_written(mut written: Vec<String>) -> RawEffect {
        if written.is_empty() {
            RawEffect::Read
        } else {
            written.sort();
            written.dedup();
            RawEffect::Writes(written)
        }
    }
}

/// Classifies every statement in `sql` and merges the answers.
pub(crate) fn raw_effect(sql: &str, backend: DbBackend, catalog: &Catalog) -> RawEffect {
    let lexed = tokenize(sql, backend);
    if lexed.doubtful {
        return RawEffect::Unknown;
    }
    let mut written = Vec::new();
    for statement in &lexed.statements {
        match statement_effect(statement, backend, catalog) {
            RawEffect::Read => {}
            RawEffect::Writes(tables) => written.extend(tables),
            RawEffect::Unknown => return RawEffect::Unknown,
        }
    }
    if catalog.expand(&mut written).is_none() {
        return RawEffect::Unknown;
    }
    RawEffect::from_written(written)
}

/// The tables the select `sql` reads (views not expanded), or `None` when it cannot be
/// cached: not one plain select, text read two ways, a relation not understood, a call
/// of a function not declared read-only, a lock (`FOR UPDATE`), or a write.
pub(crate) fn read_tables(sql: &str, backend: DbBackend, catalog: &Catalog) -> Option<Vec<String>> {
    let lexed = tokenize(sql, backend);
    let [tokens] = lexed.statements.as_slice() else {
        return None;
    };
    if lexed.doubtful {
        return None;
    }
    query_reads(tokens, catalog)
}

/// The tables the query of a view definition (`CREATE VIEW v [(columns)] AS query`, as
/// SQLite keeps it) reads, or `None` when that cannot be told.
pub(crate) fn view_reads(sql: &str, backend: DbBackend, catalog: &Catalog) -> Option<Vec<String>> {
    let lexed = tokenize(sql, backend);
    let [tokens] = lexed.statements.as_slice() else {
        return None;
    };
    if lexed.doubtful || !tokens.first()?.is_word("CREATE") {
        return None;
    }
    // The first `AS`: the optional column list before it holds none.
    let at = tokens.iter().position(|t| t.is_word("AS"))?;
    query_reads(&tokens[at + 1..], catalog)
}

fn query_reads(tokens: &[Token], catalog: &Catalog) -> Option<Vec<String>> {
    if !is_query(tokens) || writes_inside_query(tokens) {
        return None;
    }
    let found = scan(tokens);
    if found.opaque || found.locking {
        return None;
    }
    let mut tables = found.tables;
    for call in &found.calls {
        tables.extend(catalog.function(call)?.iter().cloned());
    }
    Some(tables)
}

const WRITE_WORDS: [&str; 7] = [
    "INSERT", "UPDATE", "DELETE", "MERGE", "TRUNCATE", "REPLACE", "INTO",
];

/// Whether a statement is a query: `SELECT`, `WITH`, `VALUES`, `TABLE`, or one of them
/// in parentheses.
fn is_query(tokens: &[Token]) -> bool {
    let first = tokens.iter().find(|t| **t != Token::Symbol('('));
    first.is_some_and(|t| {
        ["SELECT", "WITH", "VALUES", "TABLE"]
            .iter()
            .any(|w| t.is_word(w))
    })
}

/// Whether a query also writes: a data-modifying CTE, `SELECT INTO`. `FOR UPDATE` and
/// `FOR NO KEY UPDATE` lock, they do not write; `REPLACE(` is a string function.
fn writes_inside_query(tokens: &[Token]) -> bool {
    tokens.iter().enumerate().any(|(i, t)| {
        let before = |w: &str| i > 0 && tokens[i - 1].is_word(w);
        WRITE_WORDS.iter().any(|w| t.is_word(w))
            && !(t.is_word("UPDATE") && (before("FOR") || before("KEY")))
            && !(t.is_word("REPLACE") && tokens.get(i + 1) == Some(&Token::Symbol('(')))
    })
}

fn statement_effect(tokens: &[Token], backend: DbBackend, catalog: &Catalog) -> RawEffect {
    let found = scan(tokens);
    if found.calls.iter().any(|c| catalog.function(c).is_none()) {
        // A function that may write anything.
        return RawEffect::Unknown;
    }
    if is_query(tokens) {
        return if writes_inside_query(tokens) {
            RawEffect::Unknown
        } else {
            RawEffect::Read
        };
    }
    let Some(Token::Word(first)) = tokens.first() else {
        return RawEffect::Unknown;
    };
    match first.to_ascii_uppercase().as_str() {
        "SHOW" => RawEffect::Read,
        "EXPLAIN" => {
            // `EXPLAIN ANALYZE` runs the statement.
            if tokens
                .iter()
                .any(|t| t.is_word("ANALYZE") || t.is_word("ANALYSE"))
            {
                RawEffect::Unknown
            } else {
                RawEffect::Read
            }
        }
        "INSERT" | "REPLACE" => {
            let mut i = 1;
            if tokens.get(i).is_some_and(|t| t.is_word("OR")) {
                i += 2;
            }
            if !tokens.get(i).is_some_and(|t| t.is_word("INTO")) {
                return RawEffect::Unknown;
            }
            one_table(tokens, i + 1)
        }
        "UPDATE" => {
            let mut i = 1;
            if tokens.get(i).is_some_and(|t| t.is_word("OR")) {
                i += 2;
            }
            if backend == DbBackend::MySql {
                // Reserved words in MySQL: they cannot name the table.
                while tokens
                    .get(i)
                    .is_some_and(|t| t.is_word("LOW_PRIORITY") || t.is_word("IGNORE"))
                {
                    i += 1;
                }
            }
            if tokens.get(i).is_some_and(|t| t.is_word("ONLY")) {
                i += 1;
            }
            one_target(tokens, i, &["SET"])
        }
        "DELETE" => {
            if !tokens.get(1).is_some_and(|t| t.is_word("FROM")) {
                return RawEffect::Unknown;
            }
            let mut i = 2;
            if tokens.get(i).is_some_and(|t| t.is_word("ONLY")) {
                i += 1;
            }
            one_target(
                tokens,
                i,
                &["WHERE", "USING", "RETURNING", "ORDER", "LIMIT"],
            )
        }
        "TRUNCATE" => {
            let mut i = 1;
            let mut tables = Vec::new();
            if tokens.get(i).is_some_and(|t| t.is_word("TABLE")) {
                i += 1;
            }
            loop {
                if tokens.get(i).is_some_and(|t| t.is_word("ONLY")) {
                    i += 1;
                }
                let Some((table, next)) = table_name(tokens, i) else {
                    return RawEffect::Unknown;
                };
                tables.push(table);
                i = next;
                match tokens.get(i) {
                    Some(Token::Symbol(',')) => i += 1,
                    _ => break,
                }
            }
            if truncate_options_are_plain(&tokens[i..]) {
                RawEffect::Writes(tables)
            } else {
                // `CASCADE` also empties every table that references these, which the
                // text does not name.
                RawEffect::Unknown
            }
        }
        _ => RawEffect::Unknown,
    }
}

/// Whether what follows a `TRUNCATE`'s table list empties those tables only:
/// `[RESTART | CONTINUE IDENTITY] [RESTRICT]`, in any order.
fn truncate_options_are_plain(rest: &[Token]) -> bool {
    let mut i = 0;
    while let Some(t) = rest.get(i) {
        if (t.is_word("RESTART") || t.is_word("CONTINUE"))
            && rest.get(i + 1).is_some_and(|t| t.is_word("IDENTITY"))
        {
            i += 2;
        } else if t.is_word("RESTRICT") {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// The one table an `UPDATE` or `DELETE` writes: the name at `at`, then an optional
/// alias, then one of `next` (or the end). Anything else there (a second target, a
/// join, a form not read here) may write more tables: unknown.
fn one_target(tokens: &[Token], at: usize, next: &[&str]) -> RawEffect {
    let Some((table, mut i)) = table_name(tokens, at) else {
        return RawEffect::Unknown;
    };
    let follows = |t: Option<&Token>| t.is_none_or(|t| next.iter().any(|w| t.is_word(w)));
    if !follows(tokens.get(i)) {
        if tokens.get(i).is_some_and(|t| t.is_word("AS")) {
            i += 1;
        }
        if tokens.get(i).and_then(Token::name).is_none() || !follows(tokens.get(i + 1)) {
            return RawEffect::Unknown;
        }
    }
    RawEffect::Writes(vec![table])
}

fn one_table(tokens: &[Token], at: usize) -> RawEffect {
    match table_name(tokens, at) {
        Some((table, _)) => RawEffect::Writes(vec![table]),
        None => RawEffect::Unknown,
    }
}

/// Reads `a`, `"a"`, `s.a`, `"s"."a"` at `at`; returns the last component and the index
/// after the name.
fn table_name(tokens: &[Token], at: usize) -> Option<(String, usize)> {
    name_at(tokens, at).map(|(name, _, next)| (name, next))
}

/// The target of a single-row write: `UPDATE t SET ... WHERE c1 = ? AND c2 = ?` or
/// `DELETE FROM t WHERE ...` where the `WHERE` clause is only equalities between a
/// column of `t` and a placeholder, joined by `AND` (the form sea-orm generates for an
/// ActiveModel update or delete). Returns the table and `(column, value index)` pairs,
/// or `None` when the statement is anything else: in particular when it names another
/// table (`UPDATE t ... FROM u`, `DELETE FROM t USING u`, MySQL's `UPDATE t JOIN u`),
/// whose rows can make the `WHERE` true for every row of `t`.
pub(crate) fn row_target(sql: &str, backend: DbBackend) -> Option<(String, Vec<(String, usize)>)> {
    let lexed = tokenize(sql, backend);
    let [tokens] = lexed.statements.as_slice() else {
        return None;
    };
    if lexed.doubtful {
        return None;
    }
    let table = match statement_effect(tokens, backend, &Catalog::default()) {
        RawEffect::Writes(mut tables) if tables.len() == 1 => tables.pop()?,
        _ => return None,
    };
    if !(tokens[0].is_word("UPDATE") || tokens[0].is_word("DELETE")) {
        return None;
    }
    let names = target_names(tokens, &table)?;
    // The top-level WHERE: the last one, since sea-orm puts no subquery after it, and a
    // subquery before it (in SET) would have its own WHERE inside parentheses.
    let mut depth = 0i32;
    let mut where_at = None;
    for (i, t) in tokens.iter().enumerate() {
        match t {
            Token::Symbol('(') => depth += 1,
            Token::Symbol(')') => depth -= 1,
            t if depth == 0 && t.is_word("WHERE") => where_at = Some(i),
            _ => {}
        }
    }
    let mut i = where_at? + 1;
    let mut pairs = Vec::new();
    loop {
        let (column, qualifier, next) = name_at(tokens, i)?;
        if qualifier.is_some_and(|q| !names.contains(&q)) {
            // A column of another relation.
            return None;
        }
        i = next;
        if tokens.get(i) != Some(&Token::Symbol('=')) {
            return None;
        }
        let Token::Placeholder(index) = tokens.get(i + 1)? else {
            return None;
        };
        pairs.push((column, *index));
        i += 2;
        match tokens.get(i) {
            None => break,
            Some(t) if t.is_word("AND") => i += 1,
            Some(t) if t.is_word("RETURNING") => break,
            Some(_) => return None,
        }
    }
    Some((table, pairs))
}

/// The names the written table goes by in a single-table `UPDATE t [AS a] SET ...` or
/// `DELETE FROM t [AS a] [WHERE ...]`: the table and its alias, if any. `None` when the
/// statement names any other relation at its top level: a `FROM` or `USING` list, a
/// join, a second target.
fn target_names(tokens: &[Token], table: &str) -> Option<Vec<String>> {
    let update = tokens.first()?.is_word("UPDATE");
    let mut i = if update { 1 } else { 2 };
    if update && tokens.get(i).is_some_and(|t| t.is_word("OR")) {
        i += 2;
    }
    if tokens.get(i).is_some_and(|t| t.is_word("ONLY")) {
        i += 1;
    }
    let (_, _, mut i) = name_at(tokens, i)?;
    let mut names = vec![table.to_string()];
    if tokens.get(i).is_some_and(|t| t.is_word("AS")) {
        i += 1;
    }
    let clause = if update { "SET" } else { "WHERE" };
    if let Some(alias) = tokens
        .get(i)
        .filter(|t| !t.is_word(clause))
        .and_then(Token::name)
    {
        names.push(normalize_table(alias));
        i += 1;
    }
    if !tokens.get(i).is_some_and(|t| t.is_word(clause)) {
        // A join, a second target, a `USING` list, or a form not read here.
        return None;
    }
    let mut depth = 0i32;
    for t in &tokens[i..] {
        match t {
            Token::Symbol('(') => depth += 1,
            Token::Symbol(')') => depth -= 1,
            t if depth == 0 && ["FROM", "USING", "JOIN"].iter().any(|w| t.is_word(w)) => {
                return None;
            }
            _ => {}
        }
    }
    Some(names)
}

/// Whether a single `INSERT` only adds rows (no upsert, no replace): then no existing
/// row changed, and cached rows of the table stay valid.
pub(crate) fn is_pure_insert(sql: &str, backend: DbBackend) -> bool {
    let lexed = tokenize(sql, backend);
    let [tokens] = lexed.statements.as_slice() else {
        return false;
    };
    tokens.first().is_some_and(|t| t.is_word("INSERT"))
        && !tokens.get(1).is_some_and(|t| t.is_word("OR"))
        && !tokens
            .iter()
            .any(|t| t.is_word("CONFLICT") || t.is_word("DUPLICATE"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PG: DbBackend = DbBackend::Postgres;

    fn raw(sql: &str) -> RawEffect {
        raw_effect(sql, PG, &Catalog::default())
    }

    fn writes(tables: &[&str]) -> RawEffect {
        RawEffect::Writes(tables.iter().map(|t| t.to_string()).collect())
    }

    #[test]
    fn reads_are_reads() {
        assert_eq!(raw("SELECT * FROM product WHERE id = 1"), RawEffect::Read);
        assert_eq!(raw("select 1; select 2;"), RawEffect::Read);
        assert_eq!(
            raw("SELECT * FROM t WHERE id = $1 FOR UPDATE"),
            RawEffect::Read
        );
        assert_eq!(raw("SELECT 'UPDATE x' AS s"), RawEffect::Read);
    }

    #[test]
    fn simple_writes_name_their_table() {
        assert_eq!(raw("UPDATE product SET price = 1"), writes(&["product"]));
        assert_eq!(
            raw(r#"update "Public"."Product" set a = 'x;y' where id = ?"#),
            writes(&["product"])
        );
        assert_eq!(
            raw("INSERT OR REPLACE INTO product (id) VALUES (1)"),
            writes(&["product"])
        );
        assert_eq!(raw("DELETE FROM ONLY t -- c\n"), writes(&["t"]));
        assert_eq!(raw("TRUNCATE TABLE a, b"), writes(&["a", "b"]));
        assert_eq!(
            raw("UPDATE a SET x = 1; DELETE FROM b"),
            writes(&["a", "b"])
        );
    }

    #[test]
    fn anything_unclear_is_unknown() {
        for sql in [
            "CREATE TABLE t (id int)",
            "DROP TABLE t",
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
            "SELECT * INTO t2 FROM t",
            "BEGIN",
            "CALL proc()",
            "EXPLAIN ANALYZE DELETE FROM t",
            "DELETE t",
            "",
        ] {
            let effect = raw(sql);
            assert!(
                effect == RawEffect::Unknown || (sql.is_empty() && effect == RawEffect::Read),
                "{sql}: {effect:?}"
            );
        }
    }

    #[test]
    fn calls_of_functions_not_known_read_only_are_writes_of_unknown_tables() {
        assert_eq!(raw("SELECT reprice()"), RawEffect::Unknown);
        assert_eq!(raw("UPDATE t SET a = f(a)"), RawEffect::Unknown);
        assert_eq!(raw("SELECT lower(name), count(*) FROM t"), RawEffect::Read);
        assert_eq!(raw("SELECT nextval('seq')"), RawEffect::Unknown);
        let mut catalog = Catalog::default();
        catalog
            .functions
            .insert("rating".into(), vec!["review".into()]);
        assert_eq!(
            raw_effect("SELECT rating(1)", PG, &catalog),
            RawEffect::Read
        );
        assert_eq!(
            read_tables("SELECT rating(id) FROM p", PG, &catalog),
            Some(vec!["p".to_string(), "review".to_string()])
        );
        assert_eq!(read_tables("SELECT other(id) FROM p", PG, &catalog), None);
    }

    #[test]
    fn hidden_statements_are_seen() {
        for sql in [
            r"SELECT E'it\'s'; DELETE FROM t",
            "SELECT 1 /* /* */ ' */; DELETE FROM t; -- '",
            "SELECT $q$ it's; $$ $q$; DELETE FROM t",
        ] {
            assert_eq!(raw(sql), writes(&["t"]), "{sql}");
        }
        // Read two ways: unknown.
        assert_eq!(raw(r"SELECT 'a\'; DELETE FROM t; -- '"), RawEffect::Unknown);
        let lite = |sql| raw_effect(sql, DbBackend::Sqlite, &Catalog::default());
        assert_eq!(lite("/* /* */ DELETE FROM t; /* */"), writes(&["t"]));
        assert_eq!(lite("SELECT 1 AS [x;y]; DELETE FROM t"), writes(&["t"]));
    }

    #[test]
    fn view_definitions() {
        let lite = DbBackend::Sqlite;
        let c = Catalog::default();
        assert_eq!(
            view_reads(
                "CREATE VIEW v (a, b) AS SELECT x.a, y.b FROM x JOIN y ON x.id = y.id",
                lite,
                &c
            ),
            Some(vec!["x".to_string(), "y".to_string()])
        );
        assert_eq!(
            view_reads("CREATE VIEW v AS SELECT likely(a) FROM x", lite, &c),
            None
        );
        assert_eq!(view_reads("DROP VIEW v", lite, &c), None);
    }

    #[test]
    fn row_targets_from_generated_sql() {
        assert_eq!(
            row_target(
                r#"UPDATE "product" SET "price" = $1 WHERE "product"."id" = $2"#,
                PG
            ),
            Some(("product".into(), vec![("id".into(), 1)]))
        );
        assert_eq!(
            row_target(
                r#"UPDATE "p" SET "a" = ?, "b" = ? WHERE "p"."x" = ? AND "p"."y" = ? RETURNING "a""#,
                PG
            ),
            Some(("p".into(), vec![("x".into(), 2), ("y".into(), 3)]))
        );
        assert_eq!(
            row_target(r#"DELETE FROM "p" WHERE "p"."id" = ?"#, PG),
            Some(("p".into(), vec![("id".into(), 0)]))
        );
        assert_eq!(
            row_target(r#"DELETE FROM "p" WHERE "p"."id" > ?"#, PG),
            None
        );
        assert_eq!(
            row_target(r#"DELETE FROM "p" WHERE "p"."id" = 5"#, PG),
            None
        );
        assert_eq!(
            row_target(r#"DELETE FROM "p" WHERE "a" = ? OR "b" = ?"#, PG),
            None
        );
        assert_eq!(row_target(r#"UPDATE "p" SET "a" = ?"#, PG), None);
        assert_eq!(
            row_target(r#"UPDATE p AS x SET a = ? WHERE x.id = ?"#, PG),
            Some(("p".into(), vec![("id".into(), 1)]))
        );
    }

    #[test]
    fn writes_naming_another_table_are_not_single_row_writes() {
        let lite = DbBackend::Sqlite;
        for (sql, backend) in [
            ("UPDATE p SET a = 0 FROM c WHERE c.id = ?", PG),
            ("UPDATE p SET a = 0 FROM c WHERE id = ?", lite),
            ("DELETE FROM p USING c WHERE c.id = ?", PG),
            ("DELETE FROM p USING c WHERE p.id = ?", PG),
            (
                "UPDATE p JOIN c ON c.id = p.c SET p.a = 0 WHERE p.id = ?",
                DbBackend::MySql,
            ),
            ("UPDATE p SET a = 0 WHERE c.id = ?", PG),
            ("UPDATE p AS x SET a = 0 WHERE p2.id = ?", PG),
        ] {
            assert_eq!(row_target(sql, backend), None, "{sql}");
        }
    }

    /// The effect of `sql` as MySQL reads it.
    fn my(sql: &str) -> RawEffect {
        raw_effect(sql, DbBackend::MySql, &Catalog::default())
    }

    #[test]
    fn unicode_escaped_identifiers_are_read_two_ways() {
        // PostgreSQL `U&"..."`: the table is `product`, not `u`.
        assert_eq!(
            raw(r#"UPDATE U&"pr\006fduct" SET price = 0"#),
            RawEffect::Unknown
        );
        assert_eq!(
            raw(r#"SELECT U&'\0041'; DELETE FROM t"#),
            RawEffect::Unknown
        );
        assert_eq!(
            read_tables(r#"SELECT * FROM U&"t""#, PG, &Catalog::default()),
            None
        );
        // A column named `u` and the `&` operator.
        assert_eq!(raw(r#"UPDATE t SET a = u & "b""#), writes(&["t"]));
    }

    #[test]
    fn truncate_cascade_writes_unknown_tables() {
        // `CASCADE` also empties every table referencing `category`.
        assert_eq!(raw("TRUNCATE category CASCADE"), RawEffect::Unknown);
        assert_eq!(
            raw("TRUNCATE a, b RESTART IDENTITY CASCADE"),
            RawEffect::Unknown
        );
        assert_eq!(
            raw("TRUNCATE TABLE a RESTART IDENTITY RESTRICT"),
            writes(&["a"])
        );
        assert_eq!(raw("TRUNCATE a CONTINUE IDENTITY"), writes(&["a"]));
    }

    #[test]
    fn mysql_update_modifiers_are_skipped() {
        assert_eq!(
            my("UPDATE LOW_PRIORITY product SET price = 0"),
            writes(&["product"])
        );
        assert_eq!(
            my("UPDATE LOW_PRIORITY IGNORE product AS p SET price = 0"),
            writes(&["product"])
        );
        assert_eq!(
            my("UPDATE IGNORE product SET price = 0"),
            writes(&["product"])
        );
        // Elsewhere they are names like any other.
        assert_eq!(raw("UPDATE ignore SET a = 0"), writes(&["ignore"]));
    }

    #[test]
    fn writes_of_several_targets_are_unknown() {
        for sql in [
            "UPDATE product, category SET product.price = 0, category.name = 'x'",
            "UPDATE product p JOIN category c ON c.id = p.category_id SET c.name = 'x'",
            "DELETE FROM a, b USING a JOIN b ON a.id = b.id",
            "DELETE FROM a INNER JOIN b",
        ] {
            assert_eq!(my(sql), RawEffect::Unknown, "{sql}");
        }
        assert_eq!(raw("UPDATE p AS x SET a = 1"), writes(&["p"]));
        assert_eq!(raw("UPDATE p x SET a = 1 FROM c"), writes(&["p"]));
        assert_eq!(
            raw("DELETE FROM p x USING c WHERE x.c = c.id"),
            writes(&["p"])
        );
        assert_eq!(raw("DELETE FROM p RETURNING id"), writes(&["p"]));
    }

    #[test]
    fn mysql_double_quoted_text_with_a_backslash_is_read_two_ways() {
        // MySQL (without ANSI_QUOTES) reads `"a\"'"` as one string with an escaped
        // quote, then runs the DELETE; read as a quoted name it ends at `\"`, and
        // `'"; DELETE FROM t; -- '` is a string literal.
        let sql = r#"SELECT "a\"'"; DELETE FROM t; -- '"#;
        assert_eq!(my(sql), RawEffect::Unknown, "{sql}");
        assert_eq!(my(r#"SELECT "a"; DELETE FROM t"#), writes(&["t"]));
        // PostgreSQL reads no escapes in quoted names.
        assert_eq!(raw(r#"SELECT "a\" FROM x; DELETE FROM t"#), writes(&["t"]));
    }

    #[test]
    fn pure_inserts() {
        assert!(is_pure_insert(
            r#"INSERT INTO "p" ("a") VALUES (?) RETURNING "id""#,
            PG
        ));
        assert!(!is_pure_insert(
            r#"INSERT INTO "p" ("a") VALUES (?) ON CONFLICT ("a") DO UPDATE SET "a" = ?"#,
            PG
        ));
        assert!(!is_pure_insert("INSERT OR REPLACE INTO p VALUES (1)", PG));
    }
}
