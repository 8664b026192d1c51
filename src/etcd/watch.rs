//! One watch stream: the create request, progress requests, answers.

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use super::client::{Client, Error};
use super::proto::etcdserverpb::{
    watch_request::RequestUnion, WatchCreateRequest, WatchProgressRequest, WatchRequest,
    WatchResponse,
};

/// A live watch. Dropping it ends the stream.
#[derive(Debug)]
pub struct Watcher {
    requests: mpsc::Sender<WatchRequest>,
    answers: Streaming<WatchResponse>,
}

impl Client {
    /// Opens a watch stream and asks for `create`. The first answer says
    /// whether it was created (or cancelled, e.g. compacted).
    /// `max_message` bounds one answer: etcd may batch many revisions'
    /// events into one.
    pub async fn watch(
        &self,
        create: WatchCreateRequest,
        max_message: usize,
    ) -> Result<Watcher, Error> {
        let first = WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(create)),
        };
        let open = |c: Client| {
            let first = first.clone();
            async move {
                // Room for the create request and one progress request.
                let (tx, rx) = mpsc::channel(2);
                tx.try_send(first)
                    .map_err(|_| tonic::Status::internal("watch request not queued"))?;
                let answers = c
                    .watch_client()
                    .max_decoding_message_size(max_message)
                    .watch(ReceiverStream::new(rx))
                    .await?;
                Ok(answers.map(|a| (tx, a)))
            }
        };
        let (requests, answers) = self.with_token(open).await?;
        Ok(Watcher { requests, answers })
    }
}

impl Watcher {
    /// The next answer; `None` when the server closed the stream.
    pub async fn message(&mut self) -> Result<Option<WatchResponse>, Error> {
        Ok(self.answers.message().await?)
    }

    /// Asks for a progress notification (an answer without events once
    /// the stream has caught up with the store).
    pub async fn request_progress(&self) -> Result<(), Error> {
        let req = WatchRequest {
            request_union: Some(RequestUnion::ProgressRequest(WatchProgressRequest {})),
        };
        self.requests
            .send(req)
            .await
            .map_err(|_| Error::Status(tonic::Status::cancelled("watch stream closed")))
    }
}
