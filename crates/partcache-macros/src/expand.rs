//! The expansion: the function keeps its signature; its body becomes a call to a
//! `::partcache::__private` helper with the original body as an `async move` block.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::ItemFn;
use syn::parse::Parser;
use syn::spanned::Spanned;

use crate::options::{Kind, Options, Ttl};
use crate::signature::{self, Key};

/// Expands one attribute on one function.
pub(crate) fn expand(kind: Kind, attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let options =
        (|input: syn::parse::ParseStream<'_>| Options::parse(kind, input)).parse2(attr)?;
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
    let args = signature::arguments(&mut function.sig);
    let key = signature::key(&options, &args, &function.sig.ident)?;
    let body = generated_body(&options, &function, key)?;
    let ItemFn {
        attrs, vis, sig, ..
    } = function;
    Ok(quote! {
        #(#attrs)*
        #vis #sig {
            #body
        }
    })
}

fn generated_body(
    options: &Options,
    function: &ItemFn,
    key: Option<Key>,
) -> syn::Result<TokenStream> {
    let sig = &function.sig;
    let output_ty = signature::output_type(sig);
    let fn_name = sig.ident.to_string();
    let cache_name = options
        .cache
        .as_ref()
        .map(|lit| lit.value())
        .unwrap_or_default();

    // The cached value type: the function's (for `#[cacheable]`/`#[cache_put]`) or the
    // one `value_type` names (`#[cache_evict]`, whose output is not cached).
    let (value_ty, value_span, shape) = if options.kind == Kind::Evict {
        let Some(value_type) = &options.value_type else {
            return Err(syn::Error::new(
                proc_macro2::Span::call_site(),
                format!(
                    "#[cache_evict] needs the value type of cache `{cache_name}`: add `value_type = T` (what its #[cacheable] functions cache, e.g. the `T` of `Result<T, E>`); caches are typed, and evicting through the wrong type would miss"
                ),
            ));
        };
        (quote!(#value_type), value_type.span(), None)
    } else {
        let cached = signature::cached(sig, options)?;
        (cached.value_ty, cached.value_span, Some(cached.shape))
    };
    let key_ty = match (&key, &options.key_type) {
        (Some(key), _) => key.ty.clone(),
        (None, Some(key_type)) => quote!(#key_type),
        (None, None) => {
            let span = options
                .all_entries
                .unwrap_or_else(proc_macro2::Span::call_site);
            return Err(syn::Error::new(
                span,
                format!(
                    "`all_entries` needs the key type of cache `{cache_name}`: add `key_type = K` (caches are typed)"
                ),
            ));
        }
    };

    let key_assertions = key.iter().flat_map(|k| k.assertions.iter());
    let value_assertion = if options.kind == Kind::Evict {
        quote_spanned! {value_span=>
            const _: fn() = || {
                fn assert_value<T: ::partcache::CacheValue>() {}
                assert_value::<#value_ty>();
            };
        }
    } else {
        quote_spanned! {value_span=>
            const _: fn() = || {
                fn assert_value<T: ::partcache::CacheValue + ::core::clone::Clone>() {}
                assert_value::<#value_ty>();
            };
        }
    };

    let site = format_ident!("__PARTCACHE_SITE");
    let site_decl = quote! {
        static #site: ::partcache::__private::CallSite<#key_ty, #value_ty> =
            ::partcache::__private::CallSite::new(
                #cache_name,
                ::core::concat!(::core::module_path!(), "::", #fn_name),
            );
    };
    let manager = match &options.manager {
        Some(expr) => quote!(::partcache::__private::explicit_manager(&(#expr))),
        None => quote!(::partcache::__private::default_manager()),
    };

    let mut opts = quote!(::partcache::__private::Options::new());
    match &options.ttl {
        Some(Ttl::Millis(ms)) => {
            let ms = proc_macro2::Literal::u64_unsuffixed(*ms);
            opts.extend(quote!(.ttl(::core::time::Duration::from_millis(#ms))));
        }
        Some(Ttl::Expr(expr)) => opts.extend(quote!(.ttl(#expr))),
        None => {}
    }
    if options.sync.is_some() {
        opts.extend(quote!(.sync()));
    }
    if options.before {
        opts.extend(quote!(.before()));
    }

    // `condition` is evaluated first; the key only when it holds.
    let guarded = |some: TokenStream| match &options.condition {
        Some(condition) => quote! {
            if #condition { ::core::option::Option::Some(#some) } else { ::core::option::Option::None }
        },
        None => quote!(::core::option::Option::Some(#some)),
    };
    let key_binding = match (options.kind, &key) {
        (Kind::Cacheable, Some(key)) => {
            let value = &key.value;
            let some = guarded(quote!(#value));
            quote!(let __partcache_key: ::core::option::Option<#key_ty> = #some;)
        }
        (Kind::Put, Some(key)) if key.late => {
            let value = &key.value;
            let some = guarded(quote!(|result: &#value_ty| -> #key_ty { #value }));
            quote!(let __partcache_key = #some;)
        }
        (Kind::Put, Some(key)) => {
            let value = &key.value;
            let some = guarded(quote!({
                let __partcache_key: #key_ty = #value;
                move |_: &#value_ty| __partcache_key
            }));
            quote!(let __partcache_key = #some;)
        }
        (Kind::Evict, Some(key)) => {
            let value = &key.value;
            let some = guarded(quote!(::partcache::__private::Evict::Key(#value)));
            quote!(let __partcache_key: ::core::option::Option<::partcache::__private::Evict<#key_ty>> = #some;)
        }
        (Kind::Evict, None) => {
            let some = guarded(quote!(::partcache::__private::Evict::AllEntries));
            quote!(let __partcache_key: ::core::option::Option<::partcache::__private::Evict<#key_ty>> = #some;)
        }
        (_, None) => {
            return Err(syn::Error::new(
                proc_macro2::Span::call_site(),
                "`all_entries` applies to #[cache_evict] only",
            ));
        }
    };

    let block = &function.block;
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
            #block
        };
    };

    let unless = match &options.unless {
        Some(unless) => quote!(|result: &#value_ty| -> bool { #unless }),
        None => quote!(|_: &#value_ty| false),
    };
    let run = match options.kind {
        Kind::Cacheable => quote! {
            #site.cacheable(
                __partcache_manager,
                __partcache_key,
                #opts,
                #shape,
                #unless,
                __partcache_call,
            )
            .await
        },
        Kind::Put => quote! {
            #site.cache_put(
                __partcache_manager,
                __partcache_key,
                #opts,
                #shape,
                #unless,
                __partcache_call,
            )
            .await
        },
        Kind::Evict => {
            let succeeded = match &sig.output {
                syn::ReturnType::Type(_, ty) if signature::result_ok(ty).is_some() => {
                    quote!(::partcache::__private::ok_is_success)
                }
                _ => quote!(::partcache::__private::returned_is_success),
            };
            quote! {
                #site.cache_evict(
                    __partcache_manager,
                    __partcache_key,
                    #opts,
                    #succeeded,
                    __partcache_call,
                )
                .await
            }
        }
    };

    Ok(quote! {
        #(#key_assertions)*
        #value_assertion
        #site_decl
        let __partcache_manager = #manager;
        #key_binding
        #call
        #run
    })
}
