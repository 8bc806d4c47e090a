//! Best-effort reading of SQL text, for the statements that reach the connection
//! without a statement object (`execute_unprepared`, raw `Statement`s) and for the one
//! fact the statement audit does not give: which row an `UPDATE`/`DELETE` targets.
//!
//! Every answer errs towards "more invalidation": a statement this module does not
//! fully understand is [`RawEffect::Unknown`] (the caller then bumps the global epoch),
//! and a `WHERE` clause that is not a plain conjunction of `column = placeholder` is not
//! a row identity (the caller then invalidates the whole table).

use crate::key::normalize_table;

#[derive(Debug, Clone, PartialEq)]
enum Token {
    /// A bare word (keyword or identifier), as written.
    Word(String),
    /// A quoted identifier (`"x"`, `` `x` ``, `[x]`), unquoted.
    Quoted(String),
    /// A bind placeholder, with its 0-based index into the statement's values.
    Placeholder(usize),
    /// A string, number or other literal.
    Literal,
    /// Any other single character.
    Symbol(char),
    /// A placeholder style whose index cannot be known (`?NNN`, `:name`, `@name`).
    OpaquePlaceholder,
}

impl Token {
    fn is_word(&self, word: &str) -> bool {
        matches!(self, Token::Word(w) if w.eq_ignore_ascii_case(word))
    }
}

/// Splits `sql` into statements of tokens. Comments are dropped.
fn tokenize(sql: &str) -> Vec<Vec<Token>> {
    let chars: Vec<char> = sql.chars().collect();
    let mut statements = vec![Vec::new()];
    let mut question_marks = 0usize;
    let mut i = 0;
    let push = |statements: &mut Vec<Vec<Token>>, t: Token| {
        if let Some(last) = statements.last_mut() {
            last.push(t);
        }
    };
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '-' if chars.get(i + 1) == Some(&'-') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if chars.get(i + 1) == Some(&'*') => {
                i += 2;
                while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                    i += 1;
                }
                i += 2;
            }
            ';' => {
                statements.push(Vec::new());
                i += 1;
            }
            '\'' => {
                i = skip_quoted(&chars, i, '\'').1;
                push(&mut statements, Token::Literal);
            }
            '"' | '`' | '[' => {
                let close = match c {
                    '[' => ']',
                    other => other,
                };
                let (name, next) = skip_quoted(&chars, i, close);
                i = next;
                push(&mut statements, Token::Quoted(name));
            }
            '?' => {
                i += 1;
                if chars.get(i).is_some_and(|c| c.is_ascii_digit()) {
                    while chars.get(i).is_some_and(|c| c.is_ascii_digit()) {
                        i += 1;
                    }
                    push(&mut statements, Token::OpaquePlaceholder);
                } else {
                    push(&mut statements, Token::Placeholder(question_marks));
                    question_marks += 1;
                }
            }
            '$' if chars.get(i + 1).is_some_and(|c| c.is_ascii_digit()) => {
                let start = i + 1;
                i += 1;
                while chars.get(i).is_some_and(|c| c.is_ascii_digit()) {
                    i += 1;
                }
                let n: String = chars[start..i].iter().collect();
                match n.parse::<usize>() {
                    Ok(n) if n >= 1 => push(&mut statements, Token::Placeholder(n - 1)),
                    _ => push(&mut statements, Token::OpaquePlaceholder),
                }
            }
            '$' => {
                // A PostgreSQL dollar-quoted string: `$tag$ ... $tag$`.
                let mut j = i + 1;
                while chars
                    .get(j)
                    .is_some_and(|c| c.is_alphanumeric() || *c == '_')
                {
                    j += 1;
                }
                if chars.get(j) == Some(&'$') {
                    let tag: String = chars[i..=j].iter().collect();
                    let rest: String = chars[j + 1..].iter().collect();
                    let end = rest
                        .find(&tag)
                        .map(|p| rest[..p].chars().count() + tag.chars().count())
                        .unwrap_or(rest.chars().count());
                    i = j + 1 + end;
                    push(&mut statements, Token::Literal);
                } else {
                    i += 1;
                    push(&mut statements, Token::Symbol('$'));
                }
            }
            ':' | '@' if chars.get(i + 1).is_some_and(|c| c.is_alphabetic()) => {
                i += 1;
                while chars
                    .get(i)
                    .is_some_and(|c| c.is_alphanumeric() || *c == '_')
                {
                    i += 1;
                }
                push(&mut statements, Token::OpaquePlaceholder);
            }
            c if c.is_ascii_digit() => {
                while chars
                    .get(i)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '.')
                {
                    i += 1;
                }
                push(&mut statements, Token::Literal);
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while chars
                    .get(i)
                    .is_some_and(|c| c.is_alphanumeric() || *c == '_' || *c == '$')
                {
                    i += 1;
                }
                push(
                    &mut statements,
                    Token::Word(chars[start..i].iter().collect()),
                );
            }
            other => {
                push(&mut statements, Token::Symbol(other));
                i += 1;
            }
        }
    }
    statements.retain(|s| !s.is_empty());
    statements
}

/// Reads a quoted run starting at `chars[start]`; a doubled closing quote is an
/// escaped one. Returns the unquoted text and the index after the closing quote.
fn skip_quoted(chars: &[char], start: usize, close: char) -> (String, usize) {
    let mut out = String::new();
    let mut i = start + 1;
    while i < chars.len() {
        if chars[i] == close {
            if chars.get(i + 1) == Some(&close) && close != ']' {
                out.push(close);
                i += 2;
                continue;
            }
            return (out, i + 1);
        }
        out.push(chars[i]);
        i += 1;
    }
    (out, i)
}

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
pub(crate) fn raw_effect(sql: &str) -> RawEffect {
    let mut written = Vec::new();
    for statement in tokenize(sql) {
        match statement_effect(&statement) {
            RawEffect::Read => {}
            RawEffect::Writes(tables) => written.extend(tables),
            RawEffect::Unknown => return RawEffect::Unknown,
        }
    }
    RawEffect::from_written(written)
}

const WRITE_WORDS: [&str; 7] = [
    "INSERT", "UPDATE", "DELETE", "MERGE", "TRUNCATE", "REPLACE", "INTO",
];

fn statement_effect(tokens: &[Token]) -> RawEffect {
    let Some(Token::Word(first)) = tokens.first() else {
        return RawEffect::Unknown;
    };
    match first.to_ascii_uppercase().as_str() {
        "SELECT" | "WITH" | "VALUES" | "SHOW" | "TABLE" => {
            // `SELECT ... FOR UPDATE` locks, it does not write; any other write word
            // (a data-modifying CTE, `SELECT INTO`) makes the statement unknown.
            let writes = tokens.iter().enumerate().any(|(i, t)| {
                WRITE_WORDS.iter().any(|w| t.is_word(w))
                    && !(t.is_word("UPDATE") && i > 0 && tokens[i - 1].is_word("FOR"))
            });
            if writes {
                RawEffect::Unknown
            } else {
                RawEffect::Read
            }
        }
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
            if tokens.get(i).is_some_and(|t| t.is_word("ONLY")) {
                i += 1;
            }
            one_table(tokens, i)
        }
        "DELETE" => {
            if !tokens.get(1).is_some_and(|t| t.is_word("FROM")) {
                return RawEffect::Unknown;
            }
            let mut i = 2;
            if tokens.get(i).is_some_and(|t| t.is_word("ONLY")) {
                i += 1;
            }
            one_table(tokens, i)
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
            RawEffect::Writes(tables)
        }
        _ => RawEffect::Unknown,
    }
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
    let mut i = at;
    let mut last;
    loop {
        last = match tokens.get(i)? {
            Token::Word(w) => w.clone(),
            Token::Quoted(q) => q.clone(),
            _ => return None,
        };
        i += 1;
        if tokens.get(i) == Some(&Token::Symbol('.')) {
            i += 1;
            continue;
        }
        return Some((normalize_table(&last), i));
    }
}

/// The target of a single-row write: `UPDATE t SET ... WHERE c1 = ? AND c2 = ?` or
/// `DELETE FROM t WHERE ...` where the `WHERE` clause is only equalities between a
/// column and a placeholder, joined by `AND` (the form sea-orm generates for an
/// ActiveModel update or delete). Returns the table and `(column, value index)` pairs,
/// or `None` when the statement is anything else.
pub(crate) fn row_target(sql: &str) -> Option<(String, Vec<(String, usize)>)> {
    let statements = tokenize(sql);
    let [tokens] = statements.as_slice() else {
        return None;
    };
    let table = match statement_effect(tokens) {
        RawEffect::Writes(mut tables) if tables.len() == 1 => tables.pop()?,
        _ => return None,
    };
    if !(tokens[0].is_word("UPDATE") || tokens[0].is_word("DELETE")) {
        return None;
    }
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
        let (column, next) = table_name(tokens, i)?;
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

/// Whether a single `INSERT` only adds rows (no upsert, no replace): then no existing
/// row changed, and cached rows of the table stay valid.
pub(crate) fn is_pure_insert(sql: &str) -> bool {
    let statements = tokenize(sql);
    let [tokens] = statements.as_slice() else {
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

    fn writes(tables: &[&str]) -> RawEffect {
        RawEffect::Writes(tables.iter().map(|t| t.to_string()).collect())
    }

    #[test]
    fn reads_are_reads() {
        assert_eq!(
            raw_effect("SELECT * FROM product WHERE id = 1"),
            RawEffect::Read
        );
        assert_eq!(raw_effect("select 1; select 2;"), RawEffect::Read);
        assert_eq!(
            raw_effect("SELECT * FROM t WHERE id = $1 FOR UPDATE"),
            RawEffect::Read
        );
        assert_eq!(raw_effect("SELECT 'UPDATE x' AS s"), RawEffect::Read);
    }

    #[test]
    fn simple_writes_name_their_table() {
        assert_eq!(
            raw_effect("UPDATE product SET price = 1"),
            writes(&["product"])
        );
        assert_eq!(
            raw_effect(r#"update "Public"."Product" set a = 'x;y' where id = ?"#),
            writes(&["product"])
        );
        assert_eq!(
            raw_effect("INSERT OR REPLACE INTO product (id) VALUES (1)"),
            writes(&["product"])
        );
        assert_eq!(raw_effect("DELETE FROM ONLY t -- c\n"), writes(&["t"]));
        assert_eq!(raw_effect("TRUNCATE TABLE a, b"), writes(&["a", "b"]));
        assert_eq!(
            raw_effect("UPDATE a SET x = 1; DELETE FROM b"),
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
            let effect = raw_effect(sql);
            assert!(
                effect == RawEffect::Unknown || (sql.is_empty() && effect == RawEffect::Read),
                "{sql}: {effect:?}"
            );
        }
    }

    #[test]
    fn row_targets_from_generated_sql() {
        assert_eq!(
            row_target(r#"UPDATE "product" SET "price" = $1 WHERE "product"."id" = $2"#),
            Some(("product".into(), vec![("id".into(), 1)]))
        );
        assert_eq!(
            row_target(
                r#"UPDATE "p" SET "a" = ?, "b" = ? WHERE "p"."x" = ? AND "p"."y" = ? RETURNING "a""#
            ),
            Some(("p".into(), vec![("x".into(), 2), ("y".into(), 3)]))
        );
        assert_eq!(
            row_target(r#"DELETE FROM "p" WHERE "p"."id" = ?"#),
            Some(("p".into(), vec![("id".into(), 0)]))
        );
        assert_eq!(row_target(r#"DELETE FROM "p" WHERE "p"."id" > ?"#), None);
        assert_eq!(row_target(r#"DELETE FROM "p" WHERE "p"."id" = 5"#), None);
        assert_eq!(
            row_target(r#"DELETE FROM "p" WHERE "a" = ? OR "b" = ?"#),
            None
        );
        assert_eq!(row_target(r#"UPDATE "p" SET "a" = ?"#), None);
    }

    #[test]
    fn pure_inserts() {
        assert!(is_pure_insert(
            r#"INSERT INTO "p" ("a") VALUES (?) RETURNING "id""#
        ));
        assert!(!is_pure_insert(
            r#"INSERT INTO "p" ("a") VALUES (?) ON CONFLICT ("a") DO UPDATE SET "a" = ?"#
        ));
        assert!(!is_pure_insert("INSERT OR REPLACE INTO p VALUES (1)"));
    }
}
