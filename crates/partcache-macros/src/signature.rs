//! What the attributes learn from the function: its arguments (and which of them form
//! the default key), the key's type and value, and which part of the output is cached.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{
    Expr, FnArg, GenericArgument, Generics, Ident, Pat, PathArguments, ReturnType, Signature, Type,
    TypeParamBound, WherePredicate,
};

use crate::options::{Kind, Options};

/// Substrings of a type's name that mark a database handle, left out of default keys.
pub(crate) const DB_HANDLE_MARKERS: &[&str] =
    &["Db", "DB", "Database", "Connection", "Pool", "Transaction"];

/// One typed argument (receivers are not listed).
pub(crate) struct Arg {
    pub(crate) name: Option<Ident>,
    pub(crate) pat_span: Span,
    pub(crate) ty: Type,
    pub(crate) skip: bool,
    pub(crate) db_handle: bool,
}

/// Collects the arguments, removing `#[skip]` from them (it is not a real attribute).
pub(crate) fn arguments(sig: &mut Signature) -> Vec<Arg> {
    let generics = sig.generics.clone();
    let mut args = Vec::new();
    for input in &mut sig.inputs {
        let FnArg::Typed(typed) = input else {
            continue;
        };
        let before = typed.attrs.len();
        typed.attrs.retain(|a| !a.path().is_ident("skip"));
        let name = match &*typed.pat {
            Pat::Ident(pat) if pat.subpat.is_none() => Some(pat.ident.clone()),
            _ => None,
        };
        args.push(Arg {
            name,
            pat_span: typed.pat.span(),
            ty: (*typed.ty).clone(),
            skip: typed.attrs.len() != before,
            db_handle: is_db_handle(&typed.ty, &generics),
        });
    }
    args
}

fn looks_like_db(name: &str) -> bool {
    DB_HANDLE_MARKERS.iter().any(|marker| name.contains(marker))
}

fn bounds_look_like_db<'a>(bounds: impl IntoIterator<Item = &'a TypeParamBound>) -> bool {
    bounds.into_iter().any(|bound| match bound {
        TypeParamBound::Trait(t) => t
            .path
            .segments
            .last()
            .is_some_and(|s| looks_like_db(&s.ident.to_string())),
        _ => false,
    })
}

/// The documented rule: after references, a type whose last path segment contains one
/// of [`DB_HANDLE_MARKERS`] (`&Db`, `&DatabaseConnection`, `PgPool`, `&mut Transaction`),
/// an `impl Trait`/`dyn Trait` whose trait does (`&impl ConnectionTrait`), or a type
/// parameter bounded by such a trait (`db: &C` with `C: ConnectionTrait`).
fn is_db_handle(ty: &Type, generics: &Generics) -> bool {
    match ty {
        Type::Reference(r) => is_db_handle(&r.elem, generics),
        Type::Paren(p) => is_db_handle(&p.elem, generics),
        Type::Group(g) => is_db_handle(&g.elem, generics),
        Type::ImplTrait(t) => bounds_look_like_db(&t.bounds),
        Type::TraitObject(t) => bounds_look_like_db(&t.bounds),
        Type::Path(p) => {
            let Some(last) = p.path.segments.last() else {
                return false;
            };
            if looks_like_db(&last.ident.to_string()) {
                return true;
            }
            if p.qself.is_some() || p.path.segments.len() != 1 {
                return false;
            }
            let param = &last.ident;
            let inline = generics
                .type_params()
                .filter(|tp| tp.ident == *param)
                .any(|tp| bounds_look_like_db(&tp.bounds));
            let in_where = generics.where_clause.iter().any(|w| {
                w.predicates.iter().any(|pred| match pred {
                    WherePredicate::Type(pt) => {
                        matches!(&pt.bounded_ty, Type::Path(bp) if bp.path.is_ident(param))
                            && bounds_look_like_db(&pt.bounds)
                    }
                    _ => false,
                })
            });
            inline || in_where
        }
        _ => false,
    }
}

/// The cache key: how a call computes it. Its type is the declared key type; the
/// generated code checks the computed key against it.
pub(crate) struct Key {
    /// An expression of the key, evaluated before the call (on borrowed arguments),
    /// spanned at what the key is made of, so a key of the wrong type is reported there.
    pub(crate) value: TokenStream,
    /// `true` when `value` reads `result` (`#[cache_put]` only): evaluated after the call.
    pub(crate) late: bool,
}

/// The owned key an argument contributes (`&str` → `String`, `&T` → `T::Owned`).
fn arg_key(arg: &Arg, name: &Ident) -> syn::Result<TokenStream> {
    let span = arg.ty.span();
    match &arg.ty {
        Type::Reference(r) => {
            if matches!(&*r.elem, Type::ImplTrait(_)) {
                return Err(unnameable(arg));
            }
            Ok(quote_spanned!(span=> ::std::borrow::ToOwned::to_owned(&*#name)))
        }
        Type::ImplTrait(_) => Err(unnameable(arg)),
        _ => Ok(quote_spanned!(span=> ::core::clone::Clone::clone(&#name))),
    }
}

fn unnameable(arg: &Arg) -> syn::Error {
    syn::Error::new(
        arg.ty.span(),
        "an `impl Trait` argument cannot be part of a cache key (its type has no name): mark it `#[skip]`, or give `key = ...`",
    )
}

/// Whether `tokens` mention the identifier `name` anywhere.
pub(crate) fn mentions(tokens: TokenStream, name: &str) -> bool {
    tokens.into_iter().any(|tree| match tree {
        TokenTree::Ident(ident) => ident == name,
        TokenTree::Group(group) => mentions(group.stream(), name),
        _ => false,
    })
}

fn strip_parens(expr: &Expr) -> &Expr {
    match expr {
        Expr::Paren(p) => strip_parens(&p.expr),
        Expr::Group(g) => strip_parens(&g.expr),
        other => other,
    }
}

fn as_ident(expr: &Expr) -> Option<&Ident> {
    match strip_parens(expr) {
        Expr::Path(p) if p.qself.is_none() && p.attrs.is_empty() => p.path.get_ident(),
        _ => None,
    }
}

fn find<'a>(args: &'a [Arg], name: &Ident) -> Option<&'a Arg> {
    args.iter().find(|a| a.name.as_ref() == Some(name))
}

fn arg_names(args: &[Arg]) -> String {
    let names: Vec<String> = args
        .iter()
        .filter_map(|a| a.name.as_ref().map(|n| format!("`{n}`")))
        .collect();
    if names.is_empty() {
        "it has none".to_string()
    } else {
        format!("its arguments are {}", names.join(", "))
    }
}

/// Arguments as a key: one argument is the key itself, several are a tuple.
fn key_of_args(parts: Vec<TokenStream>) -> Key {
    let value = match parts.as_slice() {
        [value] => value.clone(),
        parts => quote!((#(#parts,)*)),
    };
    Key { value, late: false }
}

/// The key of a call, from `key = ...` or the default rule. `None` for `all_entries`.
pub(crate) fn key(options: &Options, args: &[Arg], fn_name: &Ident) -> syn::Result<Option<Key>> {
    if options.all_entries.is_some() {
        return Ok(None);
    }
    let Some(expr) = &options.key else {
        // The argument the manager comes from (`manager = caches`) is no part of a key.
        let manager = options.manager.as_ref().and_then(as_ident);
        return default_key(args, manager, fn_name).map(Some);
    };
    let result_is_arg = args
        .iter()
        .any(|a| a.name.as_ref().is_some_and(|n| n == "result"));
    let span = expr.span();
    if !result_is_arg && mentions(expr.to_token_stream(), "result") {
        if options.kind != Kind::Put {
            return Err(syn::Error::new(
                span,
                format!(
                    "the key of {} is computed before the call, so it cannot use `result`; only #[cache_put] keys can",
                    options.kind.attribute()
                ),
            ));
        }
        // `result` is a reference to the value: `key = result` is a copy of the value.
        let value = if as_ident(expr).is_some_and(|i| i == "result") {
            quote_spanned!(span=> ::core::clone::Clone::clone(#expr))
        } else {
            quote_spanned!(span=> ::core::clone::Clone::clone(&(#expr)))
        };
        return Ok(Some(Key { value, late: true }));
    }
    // A plain argument, or a tuple of them: owned copies of the arguments.
    let elements: Vec<&Expr> = match strip_parens(expr) {
        Expr::Tuple(t) => t.elems.iter().collect(),
        _ => vec![expr],
    };
    let mut parts = Vec::new();
    for element in &elements {
        let Some(ident) = as_ident(element) else {
            parts.clear();
            break;
        };
        match find(args, ident) {
            Some(arg) => parts.push(arg_key(arg, ident)?),
            None => {
                return Err(syn::Error::new(
                    ident.span(),
                    format!(
                        "the key names `{ident}`, which is not an argument of `{fn_name}`; {}",
                        arg_names(args)
                    ),
                ));
            }
        }
    }
    if !parts.is_empty() {
        return Ok(Some(key_of_args(parts)));
    }
    Ok(Some(Key {
        value: quote_spanned!(span=> ::core::clone::Clone::clone(&(#expr))),
        late: false,
    }))
}

/// The default key: every argument but receivers, database handles, the manager and
/// `#[skip]`ped ones.
fn default_key(args: &[Arg], manager: Option<&Ident>, fn_name: &Ident) -> syn::Result<Key> {
    let mut parts = Vec::new();
    let keyed =
        |a: &&Arg| !a.skip && !a.db_handle && (manager.is_none() || a.name.as_ref() != manager);
    for arg in args.iter().filter(keyed) {
        let Some(name) = &arg.name else {
            return Err(syn::Error::new(
                arg.pat_span,
                format!(
                    "this argument is part of `{fn_name}`'s default cache key but has no name: bind it to a name, mark it `#[skip]`, or give `key = ...`"
                ),
            ));
        };
        parts.push(arg_key(arg, name)?);
    }
    if parts.is_empty() {
        return Ok(Key {
            value: quote!(()),
            late: false,
        });
    }
    Ok(key_of_args(parts))
}

/// Which part of the output is cached: the runtime `Shape` and the value type.
pub(crate) struct Cached {
    pub(crate) shape: TokenStream,
    /// Where the cached type is written (the `T` of `Result<T, E>`...), for errors.
    pub(crate) value_span: Span,
}

/// The function's output type (`()` when it declares none).
pub(crate) fn output_type(sig: &Signature) -> TokenStream {
    match &sig.output {
        ReturnType::Default => quote!(()),
        ReturnType::Type(_, ty) => ty.to_token_stream(),
    }
}

/// `Some(args)` when `ty`'s last path segment is `name` with angle-bracketed types.
fn generic_args<'a>(ty: &'a Type, name: &str) -> Option<Vec<&'a Type>> {
    let Type::Path(p) = ty else {
        return None;
    };
    let last = p.path.segments.last()?;
    if last.ident != name {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    Some(
        args.args
            .iter()
            .filter_map(|a| match a {
                GenericArgument::Type(t) => Some(t),
                _ => None,
            })
            .collect(),
    )
}

/// `Result<T, E>` (or an alias such as `io::Result<T>`) → `T`.
pub(crate) fn result_ok(ty: &Type) -> Option<&Type> {
    generic_args(ty, "Result")?.first().copied()
}

fn option_some(ty: &Type) -> Option<&Type> {
    match generic_args(ty, "Option")?.as_slice() {
        [inner] => Some(inner),
        _ => None,
    }
}

/// The cached part of the output, from the return type and `cache_none`/`cache_err`.
pub(crate) fn cached(sig: &Signature, options: &Options) -> syn::Result<Cached> {
    let whole = |ty: &Type| Cached {
        shape: quote!(::partcache::__private::Whole),
        value_span: ty.span(),
    };
    let ty: &Type = match &sig.output {
        ReturnType::Default => {
            if let Some(span) = options.cache_none.or(options.cache_err) {
                return Err(syn::Error::new(
                    span,
                    "this option needs a function returning `Option` or `Result`",
                ));
            }
            return Ok(Cached {
                shape: quote!(::partcache::__private::Whole),
                value_span: sig.ident.span(),
            });
        }
        ReturnType::Type(_, ty) => ty,
    };
    if let Type::ImplTrait(_) = ty {
        return Err(syn::Error::new(
            ty.span(),
            "a cached function must return a nameable type, not `impl Trait`",
        ));
    }
    if let Some(ok) = result_ok(ty) {
        if options.cache_err.is_some() {
            return Ok(whole(ty));
        }
        return Ok(match option_some(ok) {
            Some(inner) if options.cache_none.is_none() => Cached {
                shape: quote!(::partcache::__private::OkSomeOnly),
                value_span: inner.span(),
            },
            Some(_) => Cached {
                shape: quote!(::partcache::__private::OkOnly),
                value_span: ok.span(),
            },
            None => {
                if let Some(span) = options.cache_none {
                    return Err(syn::Error::new(
                        span,
                        "`cache_none` needs a function returning `Option<T>` or `Result<Option<T>, E>`",
                    ));
                }
                Cached {
                    shape: quote!(::partcache::__private::OkOnly),
                    value_span: ok.span(),
                }
            }
        });
    }
    if let Some(span) = options.cache_err {
        return Err(syn::Error::new(
            span,
            "`cache_err` needs a function returning `Result`",
        ));
    }
    if let Some(inner) = option_some(ty) {
        if options.cache_none.is_some() {
            return Ok(whole(ty));
        }
        return Ok(Cached {
            shape: quote!(::partcache::__private::SomeOnly),
            value_span: inner.span(),
        });
    }
    if let Some(span) = options.cache_none {
        return Err(syn::Error::new(
            span,
            "`cache_none` needs a function returning `Option<T>` or `Result<Option<T>, E>`",
        ));
    }
    Ok(whole(ty))
}
