//! The lexer of the SQL reader: statements of tokens, read the way the backend reads
//! them, so that no string, quoted identifier or comment can hide a statement.
//!
//! Where two readings of the text are possible (a backslash in a string the server may
//! or may not treat as an escape, an unterminated quote or comment, a MySQL executable
//! comment) the lexer says so with [`Lexed::doubtful`], and the callers treat the whole
//! text as not understood.

use sea_orm::DbBackend;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Token {
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
    pub(crate) fn is_word(&self, word: &str) -> bool {
        matches!(self, Token::Word(w) if w.eq_ignore_ascii_case(word))
    }

    /// A word or quoted identifier: something that can name a table, column or function.
    pub(crate) fn name(&self) -> Option<&str> {
        match self {
            Token::Word(w) | Token::Quoted(w) => Some(w),
            _ => None,
        }
    }
}

/// The statements of a text, and whether any part of it could be read two ways.
#[derive(Debug, Default)]
pub(crate) struct Lexed {
    pub(crate) statements: Vec<Vec<Token>>,
    pub(crate) doubtful: bool,
}

/// Splits `sql` into statements of tokens, as `backend` reads it. Comments are dropped.
///
/// - PostgreSQL block comments nest (`/* /* */ */` is one comment); SQLite's and MySQL's
///   end at the first `*/`.
/// - PostgreSQL escape strings (`E'it\'s'`) take backslash escapes; dollar-quoted
///   strings (`$$...$$`, `$tag$...$tag$`) end only at their own tag.
/// - A backslash in any other string is doubtful: MySQL reads it as an escape, and so
///   does PostgreSQL with `standard_conforming_strings` off. So is one in a MySQL
///   `"..."`, a string there unless `ANSI_QUOTES` is on.
/// - PostgreSQL's Unicode-escaped names and strings (`U&"..."`, `U&'...'`) are doubtful.
pub(crate) fn tokenize(sql: &str, backend: DbBackend) -> Lexed {
    let postgres = backend == DbBackend::Postgres;
    let mysql = backend == DbBackend::MySql;
    let chars: Vec<char> = sql.chars().collect();
    let mut out = Lexed {
        statements: vec![Vec::new()],
        doubtful: false,
    };
    let mut question_marks = 0usize;
    let mut i = 0;
    let push = |out: &mut Lexed, t: Token| {
        if let Some(last) = out.statements.last_mut() {
            last.push(t);
        }
    };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            c if c.is_whitespace() => i += 1,
            '-' if next == Some('-') => i = line_end(&chars, i),
            '#' if mysql => i = line_end(&chars, i),
            '/' if next == Some('*') => {
                if mysql && chars.get(i + 2) == Some(&'!') {
                    // MySQL runs the text of `/*! ... */` comments.
                    out.doubtful = true;
                }
                match block_comment_end(&chars, i, postgres) {
                    Some(end) => i = end,
                    None => {
                        out.doubtful = true;
                        i = chars.len();
                    }
                }
            }
            ';' => {
                out.statements.push(Vec::new());
                i += 1;
            }
            '\'' => {
                let (end, closed, backslash) = string_end(&chars, i, mysql);
                out.doubtful |= !closed || backslash;
                i = end;
                push(&mut out, Token::Literal);
            }
            'e' | 'E' if postgres && next == Some('\'') && !continues_word(&chars, i) => {
                let (end, closed, _) = string_end(&chars, i + 1, true);
                out.doubtful |= !closed;
                i = end;
                push(&mut out, Token::Literal);
            }
            'u' | 'U'
                if postgres
                    && next == Some('&')
                    && matches!(chars.get(i + 2), Some('"' | '\''))
                    && !continues_word(&chars, i) =>
            {
                // A Unicode-escaped name or string (`U&"pr\006fduct"`): its text is
                // not what it reads as.
                out.doubtful = true;
                i += 2;
            }
            '"' | '`' | '[' => {
                let close = match c {
                    '[' => ']',
                    other => other,
                };
                let (name, next, closed) = quoted(&chars, i, close);
                // MySQL reads `"..."` as a string with backslash escapes (unless
                // ANSI_QUOTES is on): with a backslash, the two readings may end at
                // different quotes.
                out.doubtful |= !closed || (mysql && c == '"' && name.contains('\\'));
                i = next;
                push(&mut out, Token::Quoted(name));
            }
            '?' => {
                i += 1;
                if chars.get(i).is_some_and(|c| c.is_ascii_digit()) {
                    while chars.get(i).is_some_and(|c| c.is_ascii_digit()) {
                        i += 1;
                    }
                    push(&mut out, Token::OpaquePlaceholder);
                } else {
                    push(&mut out, Token::Placeholder(question_marks));
                    question_marks += 1;
                }
            }
            '$' if next.is_some_and(|c| c.is_ascii_digit()) => {
                let start = i + 1;
                i += 1;
                while chars.get(i).is_some_and(|c| c.is_ascii_digit()) {
                    i += 1;
                }
                let n: String = chars[start..i].iter().collect();
                match n.parse::<usize>() {
                    Ok(n) if n >= 1 => push(&mut out, Token::Placeholder(n - 1)),
                    _ => push(&mut out, Token::OpaquePlaceholder),
                }
            }
            '$' if postgres => {
                // A dollar-quoted string: `$tag$ ... $tag$`.
                let mut j = i + 1;
                while chars
                    .get(j)
                    .is_some_and(|c| c.is_alphanumeric() || *c == '_')
                {
                    j += 1;
                }
                if chars.get(j) == Some(&'$') {
                    let tag = &chars[i..=j];
                    match find(&chars, j + 1, tag) {
                        Some(at) => i = at + tag.len(),
                        None => {
                            out.doubtful = true;
                            i = chars.len();
                        }
                    }
                    push(&mut out, Token::Literal);
                } else {
                    i += 1;
                    push(&mut out, Token::Symbol('$'));
                }
            }
            ':' if next == Some(':') => {
                // A PostgreSQL cast.
                push(&mut out, Token::Symbol(':'));
                push(&mut out, Token::Symbol(':'));
                i += 2;
            }
            ':' | '@' | '$' if next.is_some_and(|c| c.is_alphabetic() || c == '_') => {
                i += 1;
                while chars
                    .get(i)
                    .is_some_and(|c| c.is_alphanumeric() || *c == '_')
                {
                    i += 1;
                }
                push(&mut out, Token::OpaquePlaceholder);
            }
            c if c.is_ascii_digit() => {
                while chars
                    .get(i)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == '.')
                {
                    i += 1;
                }
                push(&mut out, Token::Literal);
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while chars
                    .get(i)
                    .is_some_and(|c| c.is_alphanumeric() || *c == '_' || *c == '$')
                {
                    i += 1;
                }
                push(&mut out, Token::Word(chars[start..i].iter().collect()));
            }
            other => {
                push(&mut out, Token::Symbol(other));
                i += 1;
            }
        }
    }
    out.statements.retain(|s| !s.is_empty());
    out
}

/// Whether `chars[at]` continues a word (so `e'x'` there is not an escape string).
fn continues_word(chars: &[char], at: usize) -> bool {
    at > 0
        && chars
            .get(at - 1)
            .is_some_and(|c| c.is_alphanumeric() || *c == '_' || *c == '$')
}

fn line_end(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() && chars[i] != '\n' {
        i += 1;
    }
    i
}

/// The index after the block comment starting at `start`, or `None` when unterminated.
fn block_comment_end(chars: &[char], start: usize, nested: bool) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    while i + 1 < chars.len() {
        if chars[i] == '/' && chars[i + 1] == '*' && (nested || depth == 0) {
            depth += 1;
            i += 2;
        } else if chars[i] == '*' && chars[i + 1] == '/' {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return Some(i);
            }
        } else {
            i += 1;
        }
    }
    None
}

/// The end of the string starting at `chars[start]` (a `'`): the index after it,
/// whether it was closed, and whether it held a backslash. With `escapes`, a backslash
/// escapes the next character; a doubled quote is always an escaped one.
fn string_end(chars: &[char], start: usize, escapes: bool) -> (usize, bool, bool) {
    let mut i = start + 1;
    let mut backslash = false;
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                backslash = true;
                i += if escapes { 2 } else { 1 };
            }
            '\'' if chars.get(i + 1) == Some(&'\'') => i += 2,
            '\'' => return (i + 1, true, backslash),
            _ => i += 1,
        }
    }
    (chars.len(), false, backslash)
}

/// Reads a quoted identifier starting at `chars[start]`; a doubled closing quote is an
/// escaped one. Returns the unquoted text, the index after the closing quote, and
/// whether there was one.
fn quoted(chars: &[char], start: usize, close: char) -> (String, usize, bool) {
    let mut out = String::new();
    let mut i = start + 1;
    while i < chars.len() {
        if chars[i] == close {
            if chars.get(i + 1) == Some(&close) && close != ']' {
                out.push(close);
                i += 2;
                continue;
            }
            return (out, i + 1, true);
        }
        out.push(chars[i]);
        i += 1;
    }
    (out, i, false)
}

fn find(chars: &[char], from: usize, needle: &[char]) -> Option<usize> {
    (from..=chars.len().checked_sub(needle.len())?).find(|&i| chars[i..].starts_with(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(sql: &str, backend: DbBackend) -> (usize, bool) {
        let lexed = tokenize(sql, backend);
        (lexed.statements.len(), lexed.doubtful)
    }

    #[test]
    fn escape_strings_do_not_hide_a_statement() {
        let sql = r"SELECT E'it\'s'; DELETE FROM t";
        assert_eq!(count(sql, DbBackend::Postgres), (2, false));
        // The same text read as a standard string is doubtful, never one statement.
        assert!(count(r"SELECT 'it\'s'; DELETE FROM t", DbBackend::Postgres).1);
        assert!(count(r"SELECT 'a\'; DELETE FROM t; --'", DbBackend::MySql).1);
    }

    #[test]
    fn dollar_quotes_end_at_their_own_tag() {
        let sql = "SELECT $a$ $$ ; $b$ $a$; DELETE FROM t";
        assert_eq!(count(sql, DbBackend::Postgres), (2, false));
        assert_eq!(
            count("SELECT $$x$$; DELETE FROM t", DbBackend::Postgres),
            (2, false)
        );
        // Unterminated: doubtful.
        assert!(count("SELECT $a$ ; DELETE FROM t", DbBackend::Postgres).1);
    }

    #[test]
    fn nested_comments_follow_the_backend() {
        let sql = "/* a /* b */ DELETE FROM t; */ SELECT 1";
        // PostgreSQL: one comment, then a select.
        let pg = tokenize(sql, DbBackend::Postgres);
        assert_eq!(pg.statements.len(), 1);
        assert!(pg.statements[0][0].is_word("SELECT"));
        // SQLite: the comment ends at the first `*/`: the DELETE is a statement.
        let lite = tokenize(sql, DbBackend::Sqlite);
        assert!(lite.statements[0][0].is_word("DELETE"));
        assert!(count("SELECT 1 /* open", DbBackend::Sqlite).1);
        assert!(count("SELECT 1 /*! DELETE FROM t */", DbBackend::MySql).1);
    }
}
