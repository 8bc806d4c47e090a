//! Selects whose answer depends on a table read outside `WHERE`: each is cached, the
//! table is written through the other connection, and the cached answer must equal the
//! same query on a plain connection.

use partcache_sea_orm::QueryCacheExt;
use sea_orm::sea_query::{
    Alias, CommonTableExpression, Condition, Expr, ExprTrait, JoinType, Order, Query,
    SelectStatement, UnionType, WithClause,
};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, JsonValue, QueryFilter,
    QueryOrder, QuerySelect, QueryTrait, Select,
};

use super::Env;
use super::entities::{category, product};

/// `SELECT id FROM category WHERE name = 'pens'`.
fn pens() -> SelectStatement {
    Query::select()
        .column((category::Entity, category::Column::Id))
        .from(category::Entity)
        .and_where(Expr::col((category::Entity, category::Column::Name)).eq("pens"))
        .to_owned()
}

/// `(SELECT name FROM category WHERE category.id = product.category_id)`.
fn category_name() -> Expr {
    let select = Query::select()
        .column((category::Entity, category::Column::Name))
        .from(category::Entity)
        .and_where(
            Expr::col((category::Entity, category::Column::Id))
                .equals((product::Entity, product::Column::CategoryId)),
        )
        .to_owned();
    Expr::SubQuery(None, Box::new(select.into()))
}

fn in_pens() -> Expr {
    Expr::col((product::Entity, product::Column::CategoryId)).in_subquery(pens())
}

fn ids() -> Select<product::Entity> {
    product::Entity::find()
        .select_only()
        .column(product::Column::Id)
}

fn stmt(select: &mut Select<product::Entity>) -> &mut SelectStatement {
    QueryTrait::query(select)
}

/// Each case: a name and a select over `product` that reads `category` only where the
/// name says.
fn cases() -> Vec<(&'static str, Select<product::Entity>)> {
    let mut having = product::Entity::find()
        .select_only()
        .column(product::Column::CategoryId)
        .group_by(product::Column::CategoryId)
        .order_by_asc(product::Column::CategoryId);
    stmt(&mut having).and_having(in_pens());

    let mut order_by = ids();
    stmt(&mut order_by)
        .order_by_expr(category_name(), Order::Asc)
        .order_by((product::Entity, product::Column::Id), Order::Asc);

    let mut group_by = product::Entity::find().select_only().expr_as(
        Expr::col((product::Entity, product::Column::Id)).count(),
        "n",
    );
    stmt(&mut group_by).add_group_by([in_pens()]);

    let mut join_on = ids().order_by_asc(product::Column::Id);
    stmt(&mut join_on).join_as(
        JoinType::InnerJoin,
        product::Entity,
        Alias::new("p2"),
        Condition::all()
            .add(
                Expr::col((Alias::new("p2"), Alias::new("id")))
                    .equals((product::Entity, product::Column::Id)),
            )
            .add(in_pens()),
    );

    let mut select_list = ids().order_by_asc(product::Column::Id);
    stmt(&mut select_list).expr_as(category_name(), "category_name");

    let cte = CommonTableExpression::new()
        .query(pens())
        .table_name("pens_ids")
        .to_owned();
    let mut with = ids().order_by_asc(product::Column::Id);
    stmt(&mut with)
        .with_cte(WithClause::new().cte(cte).to_owned())
        .and_where(
            Expr::col((product::Entity, product::Column::CategoryId)).in_subquery(
                Query::select()
                    .column(Alias::new("id"))
                    .from(Alias::new("pens_ids"))
                    .to_owned(),
            ),
        );

    let mut union = product::Entity::find()
        .select_only()
        .column(product::Column::CategoryId)
        .filter(product::Column::Id.gt(100));
    stmt(&mut union).union(UnionType::Distinct, pens());

    let mut except = product::Entity::find()
        .select_only()
        .column(product::Column::CategoryId);
    stmt(&mut except).union(UnionType::Except, pens());

    // Two levels down: a subquery in `WHERE` whose `HAVING` reads `category`.
    let inner = Query::select()
        .column((product::Entity, product::Column::Id))
        .from(product::Entity)
        .group_by_columns([
            (product::Entity, product::Column::Id),
            (product::Entity, product::Column::CategoryId),
        ])
        .and_having(in_pens())
        .to_owned();
    let mut nested = ids().order_by_asc(product::Column::Id);
    stmt(&mut nested)
        .and_where(Expr::col((product::Entity, product::Column::Id)).in_subquery(inner));

    vec![
        ("having", having),
        ("order by", order_by),
        ("group by (unordered)", group_by),
        ("join on", join_on),
        ("select list", select_list),
        ("cte", with),
        ("union (unordered)", union),
        ("except (unordered)", except),
        ("nested having", nested),
    ]
}

/// Rows in a stable order, for the cases that have none of their own (set operations
/// and groups without `ORDER BY`).
fn stable(name: &str, mut rows: Vec<JsonValue>) -> Vec<JsonValue> {
    if name.ends_with("(unordered)") {
        rows.sort_by_key(|r| r.to_string());
    }
    rows
}

pub(crate) async fn tables_read_outside_where_invalidate(env: Env) {
    let mut before = Vec::new();
    for (name, select) in cases() {
        let first = select.clone().into_json().cached(&env.qb).all(&env.b).await;
        let first = first.unwrap_or_else(|e| panic!("{name}: {e}"));
        let hits = env.qb.stats().cache.hits;
        let second = select
            .clone()
            .into_json()
            .cached(&env.qb)
            .all(&env.b)
            .await
            .unwrap();
        assert_eq!(
            env.qb.stats().cache.hits,
            hits + 1,
            "{name}: the second read must be a hit"
        );
        assert_eq!(first, second, "{name}");
        before.push(first);
    }
    // The only write: category 2 is renamed from "paper" to "pens".
    category::ActiveModel {
        id: Set(2),
        name: Set("pens".into()),
    }
    .update(&env.a)
    .await
    .unwrap();
    for ((name, select), before) in cases().into_iter().zip(before) {
        let cached = select
            .clone()
            .into_json()
            .cached(&env.qb)
            .all(&env.b)
            .await
            .unwrap();
        let truth = select.into_json().all(env.b.inner()).await.unwrap();
        let truth = stable(name, truth);
        assert_ne!(
            truth,
            stable(name, before),
            "{name}: the write must change the answer"
        );
        assert_eq!(
            stable(name, cached),
            truth,
            "{name}: stale read after a write to category"
        );
    }
}
