//! The status enums of volumes, snapshots, backups and attachments, with Cinder's exact
//! strings and the transitions Cinder makes.
//!
//! The tables say which moves the services make on their own; an admin's
//! `os-reset_status` may set any status and is not checked against them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A string that is not one of a status enum's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?}")]
pub struct UnknownStatus {
    pub what: &'static str,
    pub value: String,
}

/// Declares a status enum whose values serialize to the given strings.
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($(#[$vmeta:meta])* $var:ident = $s:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $s)] $var),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$var),+];

            /// The string Cinder stores and shows.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$var => $s),+
                }
            }
        }

        impl FromStr for $name {
            type Err = UnknownStatus;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($s => Ok($name::$var),)+
                    _ => Err(UnknownStatus { what: $what, value: s.to_owned() }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_enum! {
    /// A volume's `status` (Cinder's `VolumeStatus.ALL` plus the strings its code writes).
    VolumeStatus, "volume status" {
        Creating = "creating",
        Available = "available",
        Deleting = "deleting",
        Error = "error",
        ErrorDeleting = "error_deleting",
        ErrorManaging = "error_managing",
        Managing = "managing",
        Attaching = "attaching",
        InUse = "in-use",
        Detaching = "detaching",
        Maintenance = "maintenance",
        RestoringBackup = "restoring-backup",
        ErrorRestoring = "error_restoring",
        Reserved = "reserved",
        AwaitingTransfer = "awaiting-transfer",
        BackingUp = "backing-up",
        ErrorBackingUp = "error_backing-up",
        ErrorExtending = "error_extending",
        Downloading = "downloading",
        Uploading = "uploading",
        Retyping = "retyping",
        Extending = "extending",
        Reverting = "reverting",
        Unmanaging = "unmanaging",
        ErrorUnmanaging = "error_unmanaging",
        ErrorManagingDeleting = "error_managing_deleting",
        MigrationTarget = "migration_target",
        Deleted = "deleted",
    }
}

string_enum! {
    /// A volume's `attach_status`, and an attachment's status (Cinder's `VolumeAttachStatus`).
    AttachStatus, "attach status" {
        Attached = "attached",
        Attaching = "attaching",
        Detached = "detached",
        Reserved = "reserved",
        Detaching = "detaching",
        ErrorAttaching = "error_attaching",
        ErrorDetaching = "error_detaching",
        Deleted = "deleted",
    }
}

string_enum! {
    /// A snapshot's `status` (Cinder's `SnapshotStatus`).
    SnapshotStatus, "snapshot status" {
        Error = "error",
        Available = "available",
        Creating = "creating",
        Deleting = "deleting",
        Deleted = "deleted",
        Updating = "updating",
        ErrorDeleting = "error_deleting",
        Unmanaging = "unmanaging",
        BackingUp = "backing-up",
        Restoring = "restoring",
    }
}

string_enum! {
    /// A backup's `status` (Cinder's `BackupStatus`).
    BackupStatus, "backup status" {
        Error = "error",
        ErrorDeleting = "error_deleting",
        Creating = "creating",
        Available = "available",
        Deleting = "deleting",
        Deleted = "deleted",
        Restoring = "restoring",
    }
}

string_enum! {
    /// A volume's `migration_status` (`None` in the model means not migrating).
    MigrationStatus, "migration status" {
        Migrating = "migrating",
        Error = "error",
        Success = "success",
        Completing = "completing",
        None = "none",
        Starting = "starting",
        Deleting = "deleting",
    }
}

impl VolumeStatus {
    /// The statuses a volume may be deleted from without `force` (Cinder's delete CAS).
    pub const DELETABLE: &'static [VolumeStatus] = &[
        VolumeStatus::Available,
        VolumeStatus::Error,
        VolumeStatus::ErrorRestoring,
        VolumeStatus::ErrorExtending,
        VolumeStatus::ErrorManaging,
    ];

    /// Whether the services move a volume from `self` to `to` (Cinder digest §3.2).
    pub fn can_transition(self, to: VolumeStatus) -> bool {
        use VolumeStatus::*;
        let allowed: &[VolumeStatus] = match self {
            // `restoring-backup`: a volume created from a backup (3.47), restored into.
            Creating => &[Available, Error, Downloading, Deleting, RestoringBackup],
            Downloading => &[Available, Error, Reserved],
            Managing => &[Available, ErrorManaging],
            Available => &[
                Deleting,
                Attaching,
                Reserved,
                Extending,
                BackingUp,
                RestoringBackup,
                Uploading,
                Retyping,
                Reverting,
                AwaitingTransfer,
                Maintenance,
                Unmanaging,
            ],
            Error | ErrorRestoring | ErrorExtending => &[Deleting],
            ErrorManaging => &[Deleting, ErrorManagingDeleting],
            Deleting | ErrorManagingDeleting | Unmanaging => &[Deleted, ErrorDeleting, Available],
            ErrorDeleting => &[Deleting],
            Attaching => &[InUse, Available, Error],
            Reserved => &[Attaching, InUse, Available],
            InUse => &[Detaching, Reserved, Extending, BackingUp, Uploading, Retyping, Maintenance],
            Detaching => &[Available, InUse],
            Extending => &[Available, InUse, ErrorExtending],
            BackingUp => &[Available, InUse, ErrorBackingUp],
            RestoringBackup => &[Available, ErrorRestoring, Error],
            Uploading => &[Available, InUse],
            Retyping => &[Available, InUse, Error],
            Reverting => &[Available, Error],
            AwaitingTransfer => &[Available],
            Maintenance => &[Available, InUse, Error],
            MigrationTarget => &[Available, Error, Deleting],
            ErrorBackingUp | ErrorUnmanaging | Deleted => &[],
        };
        allowed.contains(&to)
    }
}

impl SnapshotStatus {
    /// The statuses a snapshot may be deleted from without `force`, alone or in a volume's
    /// cascade delete (Cinder's `deletable_statuses`).
    pub const DELETABLE: &'static [SnapshotStatus] = &[SnapshotStatus::Available, SnapshotStatus::Error];

    /// Whether the services move a snapshot from `self` to `to` (Cinder digest §3.3).
    pub fn can_transition(self, to: SnapshotStatus) -> bool {
        use SnapshotStatus::*;
        let allowed: &[SnapshotStatus] = match self {
            Creating => &[Available, Error],
            Available => &[Deleting, BackingUp, Restoring, Unmanaging, Updating],
            Error => &[Deleting],
            Deleting | Unmanaging => &[Deleted, ErrorDeleting, Available],
            ErrorDeleting => &[Deleting],
            BackingUp | Restoring | Updating => &[Available, Error],
            Deleted => &[],
        };
        allowed.contains(&to)
    }
}

impl BackupStatus {
    /// Whether the services move a backup from `self` to `to` (Cinder digest §3.4).
    pub fn can_transition(self, to: BackupStatus) -> bool {
        use BackupStatus::*;
        let allowed: &[BackupStatus] = match self {
            Creating => &[Available, Error],
            Available => &[Deleting, Restoring],
            Error => &[Deleting],
            Deleting => &[Deleted, ErrorDeleting],
            ErrorDeleting => &[Deleting],
            Restoring => &[Available, Error],
            Deleted => &[],
        };
        allowed.contains(&to)
    }
}

impl AttachStatus {
    /// Whether an attachment moves from `self` to `to` (Cinder digest §3.5).
    pub fn can_transition(self, to: AttachStatus) -> bool {
        use AttachStatus::*;
        let allowed: &[AttachStatus] = match self {
            Reserved => &[Attaching, Attached, ErrorAttaching, Deleted],
            Attaching => &[Attached, ErrorAttaching, Deleted],
            Attached => &[Detaching, Deleted],
            Detaching => &[Detached, ErrorDetaching, Attached, Deleted],
            ErrorAttaching | ErrorDetaching | Detached => &[Deleted],
            Deleted => &[],
        };
        allowed.contains(&to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_round_trip_and_match_cinder() {
        for s in VolumeStatus::ALL {
            assert_eq!(s.as_str().parse::<VolumeStatus>().unwrap(), *s);
            assert_eq!(serde_json::to_string(s).unwrap(), format!("\"{}\"", s.as_str()));
        }
        assert_eq!(VolumeStatus::InUse.as_str(), "in-use");
        assert_eq!(VolumeStatus::ErrorBackingUp.as_str(), "error_backing-up");
        assert!("in_use".parse::<VolumeStatus>().is_err());
        for s in SnapshotStatus::ALL {
            assert_eq!(s.as_str().parse::<SnapshotStatus>().unwrap(), *s);
        }
        for s in BackupStatus::ALL {
            assert_eq!(s.as_str().parse::<BackupStatus>().unwrap(), *s);
        }
        for s in AttachStatus::ALL {
            assert_eq!(s.as_str().parse::<AttachStatus>().unwrap(), *s);
        }
    }

    #[test]
    fn transitions_follow_cinder() {
        use VolumeStatus::*;
        assert!(Creating.can_transition(Available));
        assert!(Available.can_transition(Reserved));
        assert!(Reserved.can_transition(Attaching));
        assert!(InUse.can_transition(Detaching));
        assert!(!InUse.can_transition(Deleting));
        assert!(!Deleted.can_transition(Available));
        for from in VolumeStatus::DELETABLE {
            assert!(from.can_transition(Deleting), "{from} -> deleting");
        }
        assert!(SnapshotStatus::Creating.can_transition(SnapshotStatus::Available));
        assert!(!SnapshotStatus::Creating.can_transition(SnapshotStatus::Deleting));
        assert!(BackupStatus::Available.can_transition(BackupStatus::Restoring));
        assert!(AttachStatus::Reserved.can_transition(AttachStatus::Attaching));
    }

    #[test]
    fn no_status_reaches_itself_and_deleted_is_final() {
        for s in VolumeStatus::ALL {
            assert!(!s.can_transition(*s), "{s} -> {s}");
            assert!(!VolumeStatus::Deleted.can_transition(*s));
        }
    }
}
