//! Concatenation: the final upload that joins the parts (tus `concatenation`), found again
//! after a rerun, and checked complete when the server may assemble it later.

use super::journal;
use super::retry::{retrying, retrying_gone};
use super::shared::Shared;
use crate::error::Error;
use url::Url;

impl Shared {
    /// Creates (or finds) the final upload that joins the parts. Returns its URL.
    pub(crate) async fn finish_concatenation(&self, size: u64) -> Result<String, Error> {
        let existing = self.journal.lock().expect("journal lock").final_url.clone();
        if let Some(f) = existing
            && let Ok(u) = Url::parse(&f)
            && let Ok(Some(state)) =
                retrying_gone(&self.cfg, &self.display, &self.cancel, || self.tus.head(&u)).await
            && state.offset == Some(size)
        {
            return Ok(f);
        }
        let urls: Vec<String> = {
            let j = self.journal.lock().expect("journal lock");
            j.parts.iter().map(|p| p.url.clone()).collect()
        };
        let concat = format!("final;{}", urls.join(" "));
        let (url, _) = retrying(&self.cfg, &self.display, &self.cancel, || {
            self.tus.create(None, &self.metadata, Some(&concat), None)
        })
        .await?;
        let snapshot = {
            let mut j = self.journal.lock().expect("journal lock");
            j.final_url = Some(url.to_string());
            j.clone()
        };
        journal::save(&self.journal_path, &snapshot)?;
        // A server with concatenation-unfinished may assemble later; check it is complete.
        if self.caps.has("concatenation-unfinished")
            && let Ok(state) = self.tus.head(&url).await
            && state.offset.is_some_and(|o| o != size)
        {
            return Err(Error::Protocol {
                url: url.to_string(),
                detail: format!(
                    "the final upload reports offset {:?} of {size} bytes",
                    state.offset
                ),
            });
        }
        Ok(url.to_string())
    }
}
