//! Identifiers as types, so an agency id can never be passed where a client id is expected.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
            Serialize, Deserialize, sqlx::Type, utoipa::ToSchema,
        )]
        #[sqlx(transparent)]
        #[serde(transparent)]
        #[schema(value_type = String, format = Uuid)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new, time-ordered id (UUIDv7), so ids sort by creation.
            pub fn new() -> Self {
                $name(Uuid::now_v7())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map($name)
            }
        }
    };
}

id_type!(
    /// A person who logs in.
    UserId
);
id_type!(
    /// An agency: the customer of pipepay, owner of client accounts.
    AgencyId
);
id_type!(
    /// A client account: one tenant, one Kommo account, one set of Flutterwave keys.
    ClientId
);
id_type!(
    /// A login session, named inside its JWT so it can be revoked.
    SessionId
);
id_type!(
    /// An agency API key.
    ApiKeyId
);
id_type!(
    /// An invitation to join an agency.
    InvitationId
);
id_type!(
    /// One audit log entry.
    AuditId
);

/// A lead in a client account's Kommo (Kommo's own number).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type)]
#[sqlx(transparent)]
#[serde(transparent)]
pub struct LeadId(pub i64);

impl fmt::Display for LeadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A payment link's reference at Flutterwave (`pp-` and a UUIDv7), pipepay's own.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type)]
#[sqlx(transparent)]
#[serde(transparent)]
pub struct TxRef(pub String);

impl TxRef {
    /// A new reference, never used before.
    pub fn new() -> TxRef {
        TxRef(format!("pp-{}", Uuid::now_v7().simple()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for TxRef {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for TxRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
