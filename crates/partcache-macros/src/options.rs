//! The attribute grammar: `name = value` options and bare flags, separated by commas.

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::{Expr, Ident, LitBool, LitStr, Path, Token};

/// Which attribute is being expanded.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Cacheable,
    Put,
    Evict,
}

impl Kind {
    /// The attribute of that name (`cacheable`, `cache_put`, `cache_evict`), if any.
    pub(crate) fn named(name: &str) -> Option<Kind> {
        match name {
            "cacheable" => Some(Kind::Cacheable),
            "cache_put" => Some(Kind::Put),
            "cache_evict" => Some(Kind::Evict),
            _ => None,
        }
    }

    pub(crate) fn attribute(self) -> &'static str {
        match self {
            Kind::Cacheable => "#[cacheable]",
            Kind::Put => "#[cache_put]",
            Kind::Evict => "#[cache_evict]",
        }
    }

    fn allowed(self) -> &'static [&'static str] {
        match self {
            Kind::Cacheable => &[
                "cache",
                "key",
                "ttl",
                "sync",
                "condition",
                "unless",
                "manager",
                "cache_none",
                "cache_err",
            ],
            Kind::Put => &[
                "cache",
                "key",
                "ttl",
                "condition",
                "unless",
                "manager",
                "cache_none",
                "cache_err",
            ],
            Kind::Evict => &[
                "cache",
                "key",
                "all_entries",
                "before",
                "condition",
                "manager",
            ],
        }
    }
}

/// A per-attribute time to live: a literal such as `"5m"` (checked at compile time) or
/// any expression of type `std::time::Duration`.
pub(crate) enum Ttl {
    Millis(u64),
    Expr(Box<Expr>),
}

/// The parsed options of one attribute.
pub(crate) struct Options {
    pub(crate) kind: Kind,
    pub(crate) cache: Option<Path>,
    pub(crate) key: Option<Expr>,
    pub(crate) ttl: Option<Ttl>,
    pub(crate) sync: Option<Span>,
    pub(crate) condition: Option<Expr>,
    pub(crate) unless: Option<Expr>,
    pub(crate) manager: Option<Expr>,
    pub(crate) cache_none: Option<Span>,
    pub(crate) cache_err: Option<Span>,
    pub(crate) all_entries: Option<Span>,
    pub(crate) before: bool,
}

impl Options {
    /// Parses the options of the attribute `kind`, written at `span` (where an error
    /// about the attribute as a whole points).
    pub(crate) fn parse(kind: Kind, input: ParseStream<'_>, span: Span) -> syn::Result<Self> {
        let mut options = Options {
            kind,
            cache: None,
            key: None,
            ttl: None,
            sync: None,
            condition: None,
            unless: None,
            manager: None,
            cache_none: None,
            cache_err: None,
            all_entries: None,
            before: false,
        };
        let mut seen: Vec<String> = Vec::new();
        while !input.is_empty() {
            let name = input.call(Ident::parse_any)?;
            let text = name.to_string();
            if text == "key_type" || text == "value_type" {
                return Err(syn::Error::new(
                    name.span(),
                    format!(
                        "`{text}` is not an option any more: the cache's declaration (`CacheDecl<K, V>`) gives its key and value types; remove it"
                    ),
                ));
            }
            if !kind.allowed().contains(&text.as_str()) {
                return Err(syn::Error::new(
                    name.span(),
                    format!(
                        "unknown option `{text}` for {}; expected one of: {}",
                        kind.attribute(),
                        kind.allowed().join(", ")
                    ),
                ));
            }
            if seen.contains(&text) {
                return Err(syn::Error::new(
                    name.span(),
                    format!("option `{text}` is given twice"),
                ));
            }
            seen.push(text.clone());
            match text.as_str() {
                "cache" => {
                    expect_eq(input, &name)?;
                    if input.peek(LitStr) {
                        let lit: LitStr = input.parse()?;
                        return Err(syn::Error::new(
                            lit.span(),
                            format!(
                                "`cache` names a cache declaration, not a string (a string cannot be checked against the other functions using the cache): declare it once, `static CACHE: partcache::CacheDecl<K, V> = partcache::CacheDecl::new({:?});`, and write `cache = CACHE`",
                                lit.value()
                            ),
                        ));
                    }
                    options.cache = Some(input.parse()?);
                }
                "key" => options.key = Some(value(input, &name)?),
                "condition" => options.condition = Some(value(input, &name)?),
                "unless" => options.unless = Some(value(input, &name)?),
                "manager" => options.manager = Some(value(input, &name)?),
                "ttl" => {
                    expect_eq(input, &name)?;
                    options.ttl = Some(if input.peek(LitStr) {
                        let lit: LitStr = input.parse()?;
                        Ttl::Millis(parse_duration(&lit.value()).map_err(|problem| {
                            syn::Error::new(
                                lit.span(),
                                format!(
                                    "invalid ttl {:?}: {problem}; write e.g. \"30s\", \"5m\", \"1h 30m\", \"250ms\", \"2d\", or a `Duration` expression",
                                    lit.value()
                                ),
                            )
                        })?)
                    } else {
                        Ttl::Expr(Box::new(input.parse()?))
                    });
                }
                "sync" => options.sync = flag(input, &name)?,
                "cache_none" => options.cache_none = flag(input, &name)?,
                "cache_err" => options.cache_err = flag(input, &name)?,
                "all_entries" => options.all_entries = flag(input, &name)?,
                "before" => options.before = flag(input, &name)?.is_some(),
                _ => unreachable_option(&name)?,
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        options.check(span)?;
        Ok(options)
    }

    /// Combinations that parse but mean nothing.
    fn check(&self, span: Span) -> syn::Result<()> {
        if self.cache.is_none() {
            return Err(syn::Error::new(
                span,
                format!(
                    "{} needs its cache: add `cache = CACHE`, naming a `static CACHE: partcache::CacheDecl<K, V>`",
                    self.kind.attribute()
                ),
            ));
        }
        if let (Some(span), Some(_)) = (self.sync, &self.unless) {
            return Err(syn::Error::new(
                span,
                "`sync` cannot be combined with `unless` (as in Spring): the callers waiting on one call share its value, so it must be cacheable whatever it is",
            ));
        }
        if let (Some(span), Some(_)) = (self.all_entries, &self.key) {
            return Err(syn::Error::new(
                span,
                "`all_entries` clears the whole cache: it takes no `key`",
            ));
        }
        if let (Some(a), Some(_)) = (self.cache_none, self.cache_err) {
            return Err(syn::Error::new(
                a,
                "`cache_none` and `cache_err` cannot be combined: with `cache_err` the whole `Result` is cached already",
            ));
        }
        Ok(())
    }
}

fn expect_eq(input: ParseStream<'_>, name: &Ident) -> syn::Result<()> {
    if !input.peek(Token![=]) {
        return Err(syn::Error::new(
            name.span(),
            format!("option `{name}` needs a value: `{name} = ...`"),
        ));
    }
    input.parse::<Token![=]>()?;
    Ok(())
}

fn value<T: Parse>(input: ParseStream<'_>, name: &Ident) -> syn::Result<T> {
    expect_eq(input, name)?;
    input.parse()
}

/// A bare flag (`sync`) or an explicit `sync = true|false`; `Some(span)` when on.
fn flag(input: ParseStream<'_>, name: &Ident) -> syn::Result<Option<Span>> {
    if input.peek(Token![=]) {
        input.parse::<Token![=]>()?;
        let on: LitBool = input.parse()?;
        return Ok(on.value.then_some(name.span()));
    }
    Ok(Some(name.span()))
}

fn unreachable_option(name: &Ident) -> syn::Result<()> {
    Err(syn::Error::new(
        name.span(),
        format!("internal error: option `{name}` is allowed but not handled"),
    ))
}

/// `"1h 30m"` → milliseconds, in the grammar `partcache::duration` reads everywhere
/// (humantime's: a number and a unit, several summed). A bare number is refused, as it
/// is in configuration files and URLs: the unit is never guessed.
pub(crate) fn parse_duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("it is empty".into());
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "`{text}` has no unit (ms, s, m, h, d, or their long forms)"
        ));
    }
    let duration = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    u64::try_from(duration.as_millis()).map_err(|_| "it is too long".into())
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations_combine_units() {
        assert_eq!(parse_duration("5m"), Ok(300_000));
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration("250ms"), Ok(250));
        assert_eq!(parse_duration("2d"), Ok(172_800_000));
        assert_eq!(parse_duration("1m 30s"), Ok(90_000));
        assert_eq!(parse_duration("5 minutes"), Ok(300_000));
    }

    #[test]
    fn bad_durations_say_why() {
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5").unwrap_err().contains("no unit"));
        assert!(parse_duration("5 parsecs").unwrap_err().contains("parsecs"));
        assert!(parse_duration("m").is_err());
    }
}
