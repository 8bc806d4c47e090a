//! The expansion: the function keeps its signature; its body becomes the original body
//! as an `async move` block, wrapped in the cache operations of every partcache
//! attribute on the function, in Spring's order whatever their textual order.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::parse::{ParseStream, Parser};
use syn::spanned::Spanned;
use syn::{AttrStyle, Attribute, ItemFn, Meta};

use crate::options::{Kind, Options, Ttl};
use crate::signature::{self, Key};

/// Expands the first partcache attribute on a function, together with the partcache
/// attributes still below it (its siblings), which it removes.
pub(crate) fn expand(kind: Kind, attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let first =
        (|input: ParseStream<'_>| Options::parse(kind, input, Span::call_site())).parse2(attr)?;
    let mut function: ItemFn = syn::parse2(item).map_err(|e| {
        syn::Error::new(
            e.span(),
            format!("{} applies to an `async fn`: {e}", kind.attribute()),
        )
    })?;
    if function.sig.asyncness.is_none() {
        return Err(syn::Error::new(
            function.sig.fn_token.span(),
            format!(
                "{} applies to an `async fn` only (the cache is asynchronous); make `{}` async",
                kind.attribute(),
                function.sig.ident
            ),
        ));
    }
    let mut operations = vec![first];
    let mut kept = Vec::new();
    // The siblings' paths, named in the expansion: rustc never resolves an attribute
    // this one took off the function, so its import would look unused.
    let mut sibling_paths = Vec::new();
    for attribute in std::mem::take(&mut function.attrs) {
        match sibling(&attribute)? {
            Some(options) => {
                operations.push(options);
                sibling_paths.push(attribute.path().clone());
            }
            None => kept.push(attribute),
        }
    }
    function.attrs = kept;
    check_combination(&operations)?;

    let args = signature::arguments(&mut function.sig);
    let mut keys = Vec::new();
    for options in &operations {
        keys.push(signature::key(options, &args, &function.sig.ident)?);
    }
    let body = generated_body(&operations, keys, &function)?;
    let (outer, inner): (Vec<Attribute>, Vec<Attribute>) = function
        .attrs
        .into_iter()
        .partition(|a| matches!(a.style, AttrStyle::Outer));
    let ItemFn { vis, sig, .. } = function;
    Ok(quote! {
        #(#outer)*
        #vis #sig {
            #(#inner)*
            #(#[allow(unused_imports)] use #sibling_paths as _;)*
            #body
        }
    })
}

/// The function without its partcache attributes (or `item` as it is, when it is not a
/// function).
pub(crate) fn without_attributes(item: TokenStream) -> TokenStream {
    match syn::parse2::<ItemFn>(item.clone()) {
        Ok(mut function) => {
            let (removed, kept): (Vec<Attribute>, Vec<Attribute>) =
                function.attrs.into_iter().partition(is_partcache);
            function.attrs = kept;
            // As in a successful expansion: the removed attributes' imports stay used.
            for attribute in removed.iter().rev() {
                let path = attribute.path();
                function.block.stmts.insert(
                    0,
                    syn::parse_quote!(#[allow(unused_imports)] use #path as _;),
                );
            }
            quote!(#function)
        }
        Err(_) => item,
    }
}

/// Whether `attribute` is one of the three (by its last path segment).
fn is_partcache(attribute: &Attribute) -> bool {
    attribute
        .path()
        .segments
        .last()
        .is_some_and(|last| Kind::named(&last.ident.to_string()).is_some())
}

/// A partcache attribute below the one being expanded: its options, parsed.
fn sibling(attribute: &Attribute) -> syn::Result<Option<Options>> {
    let Some(last) = attribute.path().segments.last() else {
        return Ok(None);
    };
    let Some(kind) = Kind::named(&last.ident.to_string()) else {
        return Ok(None);
    };
    let span = attribute.span();
    let tokens = match &attribute.meta {
        Meta::List(list) => list.tokens.clone(),
        _ => TokenStream::new(),
    };
    (|input: ParseStream<'_>| Options::parse(kind, input, span))
        .parse2(tokens)
        .map(Some)
}

/// Combinations of attributes that Spring refuses, refused at compile time.
fn check_combination(operations: &[Options]) -> syn::Result<()> {
    if operations.len() > 1
        && let Some(span) = operations.iter().find_map(|o| o.sync)
    {
        return Err(syn::Error::new(
            span,
            "`sync` cannot be combined with other cache attributes on one function (as in Spring): the callers waiting on one call share its value, and only the call that computes it would run the other operations",
        ));
    }
    Ok(())
}

/// The function's path, for logs.
fn function_name(function: &ItemFn) -> TokenStream {
    let name = function.sig.ident.to_string();
    quote!(::core::concat!(::core::module_path!(), "::", #name))
}

fn generated_body(
    operations: &[Options],
    keys: Vec<Option<Key>>,
    function: &ItemFn,
) -> syn::Result<TokenStream> {
    let sig = &function.sig;
    let output_ty = signature::output_type(sig);
    let function_name = function_name(function);

    let mut prelude = TokenStream::new();
    prelude.extend(quote! {
        const __PARTCACHE_FUNCTION: &::core::primitive::str = #function_name;
    });
    for (i, (options, key)) in operations.iter().zip(&keys).enumerate() {
        prelude.extend(operation_prelude(
            i,
            options,
            key.as_ref(),
            sig,
            &output_ty,
        )?);
    }

    let stmts = &function.block.stmts;
    let call = quote! {
        let __partcache_call = async move {
            #[allow(
                unreachable_code,
                clippy::diverging_sub_expression,
                clippy::empty_loop,
                clippy::let_unit_value,
                clippy::needless_return,
                clippy::unreachable
            )]
            if false {
                // Fixes the block's output type, so `?` and `return` in the body infer
                // as they did in the function.
                let __partcache_output: #output_ty = loop {};
                return __partcache_output;
            }
            // The body's statements, not its block: a block of one expression would
            // be "unnecessary braces" here (`unused_braces`), reported in user code.
            #(#stmts)*
        };
    };

    // `sync` is alone on its function (checked): the single-flight path.
    if let [options] = operations
        && options.kind == Kind::Cacheable
        && options.sync.is_some()
    {
        let ttl = ttl_options(options);
        // A hit answered in place returns at once: the call's future is not even built.
        return Ok(quote! {
            #prelude
            match __partcache_op_0.lookup_now(
                __partcache_manager_0,
                ::core::option::Option::as_ref(&__partcache_key_0),
            ) {
                ::core::option::Option::Some(::partcache::__private::Lookup::Hit(value)) => {
                    __partcache_op_0.output(value)
                }
                found => {
                    #call
                    __partcache_op_0
                        .cacheable_sync(__partcache_manager_0, __partcache_key_0, found, #ttl, __partcache_call)
                        .await
                }
            }
        });
    }

    let indexed = |kind: Kind| {
        operations
            .iter()
            .enumerate()
            .filter(move |(_, o)| o.kind == kind)
    };
    let mut run = TokenStream::new();

    // 1. Evictions marked `before`, whatever happens next.
    for (i, _) in indexed(Kind::Evict).filter(|(_, o)| o.before) {
        let (cache, manager, key) = names(i);
        run.extend(quote! {
            #cache.evict(#manager, #key, __PARTCACHE_FUNCTION).await;
        });
    }

    // 2. The lookups, in textual order; the first hit wins.
    let cacheables: Vec<usize> = indexed(Kind::Cacheable).map(|(i, _)| i).collect();
    let has_puts = indexed(Kind::Put).next().is_some();
    let has_evictions_after = indexed(Kind::Evict).any(|(_, o)| !o.before);
    let returns_on_hit = !has_puts && !has_evictions_after;
    if cacheables.is_empty() {
        run.extend(quote! {
            #call
            let __partcache_output = __partcache_call.await;
        });
    } else if returns_on_hit {
        // A hit is the function's output, and nothing else runs after it: it returns
        // at once, without building the call's future or moving an argument into one.
        for &i in &cacheables {
            let lookup = format_ident!("__partcache_lookup_{i}");
            let op = format_ident!("__partcache_op_{i}");
            let found = lookup_expr(i);
            run.extend(quote! {
                let #lookup = match #found {
                    ::partcache::__private::Lookup::Hit(value) => return #op.output(value),
                    other => other,
                };
            });
        }
        run.extend(quote! {
            #call
            let __partcache_output = __partcache_call.await;
        });
    } else {
        for (n, &i) in cacheables.iter().enumerate() {
            let op = format_ident!("__partcache_op_{i}");
            let lookup = format_ident!("__partcache_lookup_{i}");
            let found = lookup_expr(i);
            let ask = quote!(#op.hit(#found));
            run.extend(if n == 0 {
                quote!(let (__partcache_hit, #lookup) = #ask;)
            } else {
                quote! {
                    let (__partcache_hit, #lookup) = match __partcache_hit {
                        ::core::option::Option::Some(hit) => (
                            ::core::option::Option::Some(hit),
                            ::partcache::__private::Lookup::Skipped,
                        ),
                        ::core::option::Option::None => #ask,
                    };
                }
            });
        }
        // 3. The call: skipped on a hit, unless a `#[cache_put]` wants the call's output.
        run.extend(quote! {
            let __partcache_from_call = ::core::option::Option::is_none(&__partcache_hit);
        });
        // The call's future is built here, after the lookups: a hit builds none (and
        // moves no argument into one).
        run.extend(if has_puts {
            quote! {
                ::core::mem::drop(__partcache_hit);
                #call
                let __partcache_output = __partcache_call.await;
            }
        } else {
            quote! {
                let __partcache_output = match __partcache_hit {
                    ::core::option::Option::Some(hit) => hit,
                    ::core::option::Option::None => {
                        #call
                        __partcache_call.await
                    }
                };
            }
        });
    }
    if !cacheables.is_empty() {
        // 4a. A miss stores the call's output (not after a hit in any cache).
        let mut stores = TokenStream::new();
        for &i in &cacheables {
            let options = &operations[i];
            let (_, manager, key) = names(i);
            let op = format_ident!("__partcache_op_{i}");
            let lookup = format_ident!("__partcache_lookup_{i}");
            let unless = unless(options);
            let ttl = ttl_options(options);
            stores.extend(quote! {
                #op.store_miss(#manager, &#lookup, #key, &__partcache_output, #unless, #ttl).await;
            });
        }
        run.extend(if returns_on_hit {
            stores
        } else {
            quote! {
                if __partcache_from_call {
                    #stores
                }
            }
        });
    }

    // 4b. The puts, in textual order.
    for (i, options) in indexed(Kind::Put) {
        let (_, manager, key) = names(i);
        let op = format_ident!("__partcache_op_{i}");
        let unless = unless(options);
        let ttl = ttl_options(options);
        let late = keys[i].as_ref().is_some_and(|k| k.late);
        let store = if late {
            quote!(store_by_result)
        } else {
            quote!(store_at)
        };
        run.extend(quote! {
            #op.#store(#manager, #key, &__partcache_output, #unless, #ttl).await;
        });
    }

    // 5. The other evictions, once the call succeeded (or a hit stood for it).
    let after: Vec<_> = indexed(Kind::Evict).filter(|(_, o)| !o.before).collect();
    if !after.is_empty() {
        let succeeded = match &sig.output {
            syn::ReturnType::Type(_, ty) if signature::result_ok(ty).is_some() => {
                quote!(::partcache::__private::ok_is_success)
            }
            _ => quote!(::partcache::__private::returned_is_success),
        };
        let mut evictions = TokenStream::new();
        for (i, _) in after {
            let (cache, manager, key) = names(i);
            evictions.extend(quote! {
                #cache.evict(#manager, #key, __PARTCACHE_FUNCTION).await;
            });
        }
        run.extend(quote! {
            if #succeeded(&__partcache_output) {
                #evictions
            }
        });
    }

    Ok(quote! {
        #prelude
        #run
        __partcache_output
    })
}

/// `tokens`, all spanned at `span` (where an error about them should point).
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut tree| {
            if let proc_macro2::TokenTree::Group(group) = &tree {
                let mut inner =
                    proc_macro2::Group::new(group.delimiter(), respan(group.stream(), span));
                inner.set_span(span);
                tree = proc_macro2::TokenTree::Group(inner);
            } else {
                tree.set_span(span);
            }
            tree
        })
        .collect()
}

/// Operation `i`'s lookup, a `Lookup`: in place when it can be (a local hit or miss),
/// else in a future on the heap, so that a hit's path neither waits nor carries the
/// state of a store read.
fn lookup_expr(i: usize) -> TokenStream {
    let (_, manager, key) = names(i);
    let op = format_ident!("__partcache_op_{i}");
    quote! {
        match #op.lookup_now(#manager, ::core::option::Option::as_ref(&#key)) {
            ::core::option::Option::Some(found) => found,
            ::core::option::Option::None => {
                #op.lookup(#manager, ::core::option::Option::as_ref(&#key)).await
            }
        }
    }
}

/// The names of operation `i`'s declaration, manager and key.
fn names(i: usize) -> (syn::Ident, syn::Ident, syn::Ident) {
    (
        format_ident!("__partcache_cache_{i}"),
        format_ident!("__partcache_manager_{i}"),
        format_ident!("__partcache_key_{i}"),
    )
}

fn ttl_options(options: &Options) -> TokenStream {
    let mut opts = quote!(::partcache::__private::Options::new());
    match &options.ttl {
        Some(Ttl::Millis(ms)) => {
            let ms = proc_macro2::Literal::u64_unsuffixed(*ms);
            opts.extend(quote!(.ttl(::core::time::Duration::from_millis(#ms))));
        }
        Some(Ttl::Expr(expr)) => opts.extend(quote!(.ttl(#expr))),
        None => {}
    }
    opts
}

fn unless(options: &Options) -> TokenStream {
    match &options.unless {
        Some(unless) => quote!(|result| -> bool { #unless }),
        None => quote!(|_| false),
    }
}

/// Everything operation `i` evaluates before the call, on the borrowed arguments: its
/// declaration, manager, condition and key, and (for `#[cacheable]` and `#[cache_put]`)
/// how the function's output maps to the cached value.
fn operation_prelude(
    i: usize,
    options: &Options,
    key: Option<&Key>,
    sig: &syn::Signature,
    output_ty: &TokenStream,
) -> syn::Result<TokenStream> {
    let (cache, manager, key_name) = names(i);
    let Some(path) = &options.cache else {
        return Err(syn::Error::new(Span::call_site(), "a cache is required"));
    };
    let path_span = path.span();
    let mut prelude = quote_spanned! {path_span=>
        let #cache: &::partcache::CacheDecl<_, _> = &#path;
    };
    prelude.extend(match &options.manager {
        Some(expr) => {
            quote!(let #manager = ::partcache::__private::explicit_manager(&(#expr));)
        }
        None => quote!(let #manager = ::partcache::__private::default_manager();),
    });

    // `condition` is evaluated first; the key only when it holds.
    let guarded = |some: TokenStream| match &options.condition {
        Some(condition) => quote! {
            if #condition { ::core::option::Option::Some(#some) } else { ::core::option::Option::None }
        },
        None => quote!(::core::option::Option::Some(#some)),
    };
    let checked = |key: &Key| {
        let value = &key.value;
        quote!(::partcache::__private::key(#cache, #value))
    };
    let binding = match (options.kind, key) {
        (Kind::Evict, None) => guarded(quote!(::partcache::__private::Evict::AllEntries)),
        (Kind::Evict, Some(key)) => {
            let key = checked(key);
            guarded(quote!(::partcache::__private::Evict::Key(#key)))
        }
        (_, Some(key)) if key.late => {
            let key = checked(key);
            guarded(quote!(::partcache::__private::key_from_result(#cache, |result| #key)))
        }
        (_, Some(key)) => guarded(checked(key)),
        (_, None) => {
            return Err(syn::Error::new(
                options.all_entries.unwrap_or_else(Span::call_site),
                "`all_entries` applies to #[cache_evict] only",
            ));
        }
    };
    prelude.extend(quote!(let #key_name = #binding;));

    if options.kind != Kind::Evict {
        let cached = signature::cached(sig, options)?;
        let shape = respan(cached.shape, cached.value_span);
        let op = format_ident!("__partcache_op_{i}");
        // Spanned at the cached type: a value type other than the declared one is
        // reported there.
        prelude.extend(quote_spanned! {cached.value_span=>
            let #op = ::partcache::__private::Op::<_, _, #output_ty, ()>::new(
                #cache,
                #shape,
                __PARTCACHE_FUNCTION,
            );
        });
    }
    Ok(prelude)
}
