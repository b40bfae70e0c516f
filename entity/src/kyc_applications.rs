use sea_orm::entity::prelude::*;

/// One KYC application: the tier asked for, its status and the screening outcome.
/// Personal data is stored only encrypted (`personal_data`, see `service::kyc`).
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "kyc_applications")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub user_id: Uuid,
    /// `PENDING`, `IN_REVIEW`, `APPROVED` or `REJECTED`.
    pub status: String,
    pub requested_tier: String,
    /// ISO 3166-1 alpha-2, upper case; kept in the clear for the blocked-country rule.
    pub country: String,
    /// Base64 of nonce and AES-256-GCM ciphertext of the personal data JSON.
    pub personal_data: String,
    /// The sanctions/PEP list entries the applicant's name matched: JSON, sealed like
    /// `personal_data` (a matched entry's name is usually the applicant's).
    pub screening_hits: String,
    /// When the newest decision took effect: older provider events never override it.
    pub last_decision_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
