use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "sessions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    /// A short human description ("Firefox 133 on Linux") derived from the User-Agent.
    pub device: String,
    pub user_agent: String,
    pub ip: String,
    pub created_at: DateTimeUtc,
    pub last_seen_at: DateTimeUtc,
    /// When the refresh token lapses; pushed forward on every refresh.
    pub expires_at: DateTimeUtc,
    pub revoked_at: Option<DateTimeUtc>,
    pub revoked_reason: Option<String>,
}

impl Model {
    pub fn is_active(&self, now: DateTimeUtc) -> bool {
        self.revoked_at.is_none() && self.expires_at > now
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::users::Entity",
        from = "Column::UserId",
        to = "super::users::Column::Id",
        on_delete = "Cascade"
    )]
    User,
}

impl Related<super::users::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::User.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
