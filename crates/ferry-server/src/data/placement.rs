//! Placement (the `ferry-layout` tus extension, docs/uploads.md): a partial upload may say
//! where its bytes sit in the file that a final upload will make of the parts, so a store that
//! supports it writes every part straight into one shared staged file and the concatenation is
//! a rename instead of a copy. These are the store-neutral types; `LocalDir` implements them
//! (`local_placement`), other stores answer [`Placed::Unsupported`] and keep the copy.

/// Where a new partial upload's bytes go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// The upload opens a layout of `total` bytes and holds its first bytes (from byte 0).
    Host {
        /// The length of the whole file the parts will make.
        total: u64,
    },
    /// The upload's bytes go into the layout opened by upload `host`, from byte `base`.
    Member {
        /// The id of the upload that opened the layout (checked by the caller: the same
        /// user's partial upload, not yet part of a final one).
        host: String,
        /// Where the upload's first byte goes in the layout.
        base: u64,
    },
}

/// The answer of [`DataStore::create_placed`](super::DataStore::create_placed).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Placed {
    /// The staged data was created inside the layout.
    Placed,
    /// This store has no layouts: the caller creates plain staged data instead.
    Unsupported,
    /// The placement cannot be honoured (out of the layout's range, overlapping another part,
    /// no such layout): why, for the client.
    Refused(String),
}
