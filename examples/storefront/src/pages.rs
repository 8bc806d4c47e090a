//! Server-rendered HTML: small, dependency-free string building with escaping.

use std::fmt::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::catalog::ProductCard;
use crate::db::product;

/// Escapes text for HTML element content and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `1234` cents as `$12.34`.
pub(crate) fn price(cents: i32) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let cents = cents.unsigned_abs();
    format!("{sign}${}.{:02}", cents / 100, cents % 100)
}

/// The time of day (UTC) with milliseconds: shown on pages so that a cached page is
/// recognisable (its time does not move on a HIT).
fn now_utc() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let day_ms = ms % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03} UTC",
        day_ms / 3_600_000,
        day_ms / 60_000 % 60,
        day_ms / 1000 % 60,
        day_ms % 1000
    )
}

pub(crate) const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;max-width:70rem;color:#222}\
a{color:#0b5cad}table{border-collapse:collapse}td,th{padding:.3rem .6rem;white-space:nowrap;border-bottom:1px solid #ddd;text-align:right}\
td:first-child,th:first-child{text-align:left}.cards{display:flex;flex-wrap:wrap;gap:.8rem;padding:0;list-style:none}\
.card{border:1px solid #ccc;border-radius:6px;padding:.6rem;width:12rem}.muted{color:#777;font-size:.9em}\
.bar{background:#eee;height:6px;width:6rem;display:inline-block;margin-left:.4rem}.bar span{display:block;height:6px;background:#2a9d4b}\
.balances{display:flex;flex-wrap:wrap;gap:0 2.5rem}.balances h3{font-size:1em;margin-bottom:.3rem}";

/// A whole page around `body`.
pub(crate) fn layout(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{} · partcache storefront</title>\
         <style>{STYLE}</style></head><body><nav><a href=\"/\">storefront</a> · <a href=\"/search\">search</a> · \
         <a href=\"/admin/caches\">caches</a> · <a href=\"/metrics\">metrics</a></nav>{body}</body></html>",
        escape(title)
    )
}

/// A list of product cards.
pub(crate) fn cards(cards: &[std::sync::Arc<ProductCard>]) -> String {
    let mut html = String::from("<ul class=\"cards\">");
    for card in cards {
        let _ = write!(
            html,
            "<li class=\"card\" data-product=\"{id}\"><a href=\"/products/{id}\">{name}</a><br>\
             <span class=\"muted\">{category}</span><br><b>{price}</b>{stock}</li>",
            id = card.id,
            name = escape(&card.name),
            category = escape(&card.category),
            price = price(card.price_cents),
            stock = if card.in_stock {
                ""
            } else {
                " · <i>sold out</i>"
            },
        );
    }
    html.push_str("</ul>");
    html
}

/// The home page: best sellers.
pub(crate) fn home(best_sellers: &[std::sync::Arc<ProductCard>], store: &str) -> String {
    layout(
        "Best sellers",
        &format!(
            "<h1>Best sellers</h1>{}<p class=\"muted\">Cards from the <code>product-cards</code> cache \
             on <code>{}</code>; rendered at {}.</p>",
            cards(best_sellers),
            escape(store),
            now_utc()
        ),
    )
}

/// A product page: the product and what is bought with it.
pub(crate) fn product(
    product: &product::Model,
    category: &str,
    bought_together: &[std::sync::Arc<ProductCard>],
) -> String {
    layout(
        &product.name,
        &format!(
            "<h1 data-product=\"{id}\">{name}</h1><p class=\"muted\">{category} · product {id}</p>\
             <p><b class=\"price\">{price}</b> · {stock} in stock</p><p>{description}</p>\
             <h2>Bought together</h2>{together}\
             <p class=\"muted\">Rendered at {now}: the time stays the same while the page is served \
             from the response cache (<code>x-cache: HIT</code>).</p>",
            id = product.id,
            name = escape(&product.name),
            category = escape(category),
            price = price(product.price_cents),
            stock = product.stock,
            description = escape(&product.description),
            together = cards(bought_together),
            now = now_utc(),
        ),
    )
}

/// Search results.
pub(crate) fn search(query: &str, results: &[product::Model]) -> String {
    let mut rows = String::new();
    for p in results {
        let _ = write!(
            rows,
            "<tr><td><a href=\"/products/{id}\">{name}</a></td><td>{price}</td><td>{stock}</td></tr>",
            id = p.id,
            name = escape(&p.name),
            price = price(p.price_cents),
            stock = p.stock
        );
    }
    layout(
        "Search",
        &format!(
            "<h1>Search</h1><form action=\"/search\"><input name=\"q\" value=\"{q}\" placeholder=\"pen, notebook, ink…\">\
             <button>Search</button></form><p class=\"muted\">{n} products (results from the sea-orm query cache; \
             any write to <code>product</code> invalidates them).</p>\
             <table><thead><tr><th>product</th><th>price</th><th>stock</th></tr></thead><tbody>{rows}</tbody></table>",
            q = escape(query),
            n = results.len(),
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_neutralises_markup() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn prices_print_dollars_and_cents() {
        assert_eq!(price(1234), "$12.34");
        assert_eq!(price(5), "$0.05");
        assert_eq!(price(-250), "-$2.50");
    }
}
