//! The `ferry-layout` extension at creation (docs/uploads.md): a partial upload whose metadata
//! carries `ferry-layout` says where its bytes sit in the file the final upload will make, so
//! the data store can write them straight there (no copy at concatenation). `total=N` opens a
//! layout of N bytes with this upload's bytes first; `host=URL offset=B` puts them at byte B of
//! the layout opened by the upload at URL, which must be this user's partial upload not yet in
//! a final one. Ranges outside the layout or over another part are refused (400). A store
//! without layouts ignores the request: the upload is an ordinary partial one.

use super::create::{CreateRequest, Shape};
use super::{Refusal, Uploads};
use crate::auth::User;
use crate::data::{Placed, Placement};
use crate::store::Kind;

/// The metadata key of the extension.
pub const LAYOUT_KEY: &str = "ferry-layout";

fn bad(why: impl std::fmt::Display) -> Refusal {
    Refusal::BadRequest(format!("{LAYOUT_KEY}: {why}"))
}

/// The placement a `ferry-layout` value asks for: `total=N`, or `host=URL offset=B`.
pub fn parse(value: &str) -> Result<Placement, Refusal> {
    let (mut total, mut host, mut base) = (None, None, None);
    for pair in value.split_whitespace() {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| bad(format!("{pair:?} is not key=value")))?;
        let number = || {
            v.parse::<u64>()
                .map_err(|_| bad(format!("{k}={v:?} is not a number")))
        };
        match k {
            "total" if total.is_none() => total = Some(number()?),
            "offset" if base.is_none() => base = Some(number()?),
            "host" if host.is_none() => host = Some(upload_id(v)?),
            _ => return Err(bad(format!("unexpected {k:?}"))),
        }
    }
    match (total, host, base) {
        (Some(total), None, None) => Ok(Placement::Host { total }),
        (None, Some(host), Some(base)) => Ok(Placement::Member { host, base }),
        _ => Err(bad("send total=N, or host=URL offset=B")),
    }
}

/// The upload id at the end of an upload URL (or a bare id).
fn upload_id(url: &str) -> Result<String, Refusal> {
    crate::tus::headers::upload_id(url)
        .map(str::to_owned)
        .ok_or_else(|| bad(format!("{url:?} is not an upload URL")))
}

impl Uploads {
    /// Creates the staged data of new upload `id` (`length` bytes): inside a layout when a
    /// partial upload asks for one and the store has layouts, else plain (`target`: where it
    /// will land, see [`DataStore::create`](crate::data::DataStore::create)).
    pub(super) async fn create_staged(
        &self,
        user: &User,
        id: &str,
        req: &CreateRequest,
        length: Option<u64>,
        target: Option<&str>,
    ) -> Result<(), Refusal> {
        let Some(value) = req
            .fields
            .iter()
            .find(|(k, _)| k == LAYOUT_KEY)
            .map(|(_, v)| v.as_deref().unwrap_or_default())
        else {
            return Ok(self.data.create(id, length, target).await?);
        };
        if req.shape != Shape::Partial {
            return Err(bad(
                "only a partial upload (Upload-Concat: partial) is placed",
            ));
        }
        let Some(length) = length else {
            return Err(bad("a placed upload needs its Upload-Length at creation"));
        };
        let place = parse(value)?;
        match &place {
            Placement::Host { total } => self.check_max(*total)?,
            Placement::Member { host, .. } => {
                let rec = self.load(user, host).await?;
                if !matches!(rec.kind, Kind::Partial { final_id: None }) {
                    return Err(bad(format!(
                        "upload {host} is not a partial upload free to join"
                    )));
                }
            }
        }
        match self.data.create_placed(id, length, &place).await? {
            Placed::Placed => Ok(()),
            Placed::Refused(why) => Err(Refusal::BadRequest(why)),
            _ => Ok(self.data.create(id, Some(length), target).await?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values() {
        assert_eq!(parse("total=10").unwrap(), Placement::Host { total: 10 });
        assert_eq!(
            parse("host=http://h/uploads/ab12 offset=4").unwrap(),
            Placement::Member {
                host: "ab12".into(),
                base: 4
            }
        );
        for v in [
            "",
            "total=x",
            "total=1 total=2",
            "total=1 offset=2",
            "host=/uploads/a",
            "host=/uploads/a/../ offset=1",
            "host=/uploads/a offset=-1",
            "weird",
        ] {
            assert!(parse(v).is_err(), "{v:?}");
        }
    }
}
