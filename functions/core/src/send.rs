//! Handing a response to the host: built whole, or a head whose body is
//! sent slice by slice as it is read, so that a large body never has to
//! be held by the component at once.

use futures::{Sink, SinkExt};
use spin_sdk::http::{OutgoingResponse, Response, ResponseOutparam};

use crate::problem::Problem;

/// A response whose body follows its head in slices.
pub struct Streamed<'c> {
    /// Status and headers. A `content-length` must be among them: it is
    /// what lets a client tell a body cut short by a failed read from a
    /// whole one, since the status has left by then.
    pub head: Response,
    /// The body's slices, in order; an error ends the body early.
    pub body: Box<dyn Iterator<Item = Result<Vec<u8>, Problem>> + 'c>,
}

/// Sends `response` as it is.
pub async fn whole(out: ResponseOutparam, mut response: Response) {
    let body = std::mem::take(response.body_mut());
    if let Some(mut sink) = head(out, response)
        && let Err(err) = sink.send(body).await
    {
        eprintln!("the response body could not be sent: {err}");
    }
}

/// Sends the head, then each slice as the iterator yields it. Each send
/// waits until the host has taken the slice, so at most one slice is held
/// here while the host writes the one before to the client.
pub async fn streamed(out: ResponseOutparam, streamed: Streamed<'_>) {
    let Some(mut sink) = head(out, streamed.head) else {
        return;
    };
    for slice in streamed.body {
        let sent = match slice {
            Ok(slice) => sink.send(slice).await,
            Err(problem) => {
                // Too late for a status: ending the body short of its
                // content-length makes the host abort the response.
                eprintln!(
                    "a streamed body ended early: {} {}",
                    problem.status,
                    problem.detail.as_deref().unwrap_or(problem.title)
                );
                return;
            }
        };
        if let Err(err) = sent {
            // The client went away; nothing is left to tell it.
            eprintln!("the response body could not be sent: {err}");
            return;
        }
    }
}

/// Hands status and headers to the host; the returned sink takes the body.
fn head(
    out: ResponseOutparam,
    response: Response,
) -> Option<impl Sink<Vec<u8>, Error = impl std::fmt::Display>> {
    match OutgoingResponse::try_from(response) {
        Ok(outgoing) => {
            let sink = outgoing.take_body();
            out.set(outgoing);
            Some(sink)
        }
        Err(err) => {
            eprintln!("the response head could not be built: {err}");
            None
        }
    }
}
