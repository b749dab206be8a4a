//! bookshelf-server: shelves of books in memory, registered as `bookshelf`. Its methods
//! carry `google.api.http` annotations, so `micro api` also serves them as a REST API
//! (`GET /v1/shelves/fiction/books?genre=FICTION&tags=classic`).
//!
//! Every input is checked: what a client can send is answered with INVALID_ARGUMENT,
//! NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION or RESOURCE_EXHAUSTED, never INTERNAL.
//!
//! Prints `ready addr=<address> node=<id>` on stdout once it serves and is registered,
//! then runs until SIGINT or SIGTERM and exits 0 after a graceful shutdown.

use std::{collections::BTreeMap, pin::Pin, sync::Arc};

use micro::Service;
use tokio::sync::Mutex;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

#[allow(unreachable_pub, missing_docs)]
mod pb {
    micro::include_proto!("bookshelf.v1");
}

use pb::{
    Book, CreateBookRequest, CreateShelfRequest, DeleteBookRequest, DeleteShelfRequest, Empty,
    Genre, GetBookRequest, GetShelfRequest, LendBookRequest, ListBooksRequest, SearchBooksRequest,
    SearchBooksResponse, Shelf, UpdateBookRequest,
    bookshelf_server::{Bookshelf, BookshelfServer},
};

const MAX_ID: usize = 32;
const MAX_TEXT: usize = 200;
const MAX_TAGS: usize = 10;
const MAX_PAGES: u32 = 100_000;
const MAX_SHELVES: usize = 1_000;
const MAX_BOOKS: usize = 1_000;
const DEFAULT_PAGE_SIZE: i32 = 50;
const MAX_PAGE_SIZE: i32 = 1_000;

/// One shelf and its books by id.
#[derive(Debug, Default)]
struct ShelfState {
    theme: String,
    books: BTreeMap<String, Book>,
}

#[derive(Debug, Default)]
struct Library {
    shelves: Mutex<BTreeMap<String, ShelfState>>,
}

#[tonic::async_trait]
impl Bookshelf for Arc<Library> {
    async fn create_shelf(
        &self,
        request: Request<CreateShelfRequest>,
    ) -> Result<Response<Shelf>, Status> {
        let request = request.into_inner();
        let id = checked_id("shelf_id", &request.shelf_id)?;
        let theme = checked_text("theme", &request.theme, false)?;
        let mut shelves = self.shelves.lock().await;
        if shelves.contains_key(id) {
            return Err(Status::already_exists(format!("shelves/{id} exists")));
        }
        if shelves.len() >= MAX_SHELVES {
            return Err(Status::resource_exhausted(format!(
                "the library is full ({MAX_SHELVES} shelves)"
            )));
        }
        shelves.insert(
            id.to_owned(),
            ShelfState {
                theme: theme.to_owned(),
                books: BTreeMap::new(),
            },
        );
        Ok(Response::new(Shelf {
            name: format!("shelves/{id}"),
            theme: theme.to_owned(),
        }))
    }

    async fn get_shelf(
        &self,
        request: Request<GetShelfRequest>,
    ) -> Result<Response<Shelf>, Status> {
        let id = shelf_name(&request.into_inner().name)?;
        let shelves = self.shelves.lock().await;
        let shelf = shelves.get(&id).ok_or_else(|| shelf_not_found(&id))?;
        Ok(Response::new(Shelf {
            name: format!("shelves/{id}"),
            theme: shelf.theme.clone(),
        }))
    }

    async fn delete_shelf(
        &self,
        request: Request<DeleteShelfRequest>,
    ) -> Result<Response<Empty>, Status> {
        let id = shelf_name(&request.into_inner().name)?;
        self.shelves
            .lock()
            .await
            .remove(&id)
            .ok_or_else(|| shelf_not_found(&id))?;
        Ok(Response::new(Empty {}))
    }

    async fn create_book(
        &self,
        request: Request<CreateBookRequest>,
    ) -> Result<Response<Book>, Status> {
        let request = request.into_inner();
        let shelf_id = shelf_name(&request.parent)?;
        let book_id = checked_id("book_id", &request.book_id)?;
        let mut book = request
            .book
            .ok_or_else(|| Status::invalid_argument("book is missing"))?;
        check_book(&book)?;
        book.name = format!("shelves/{shelf_id}/books/{book_id}");
        book.lent = false;
        book.borrower.clear();
        book.times_lent = 0;
        let mut shelves = self.shelves.lock().await;
        let shelf = shelves
            .get_mut(&shelf_id)
            .ok_or_else(|| shelf_not_found(&shelf_id))?;
        if shelf.books.contains_key(book_id) {
            return Err(Status::already_exists(format!("{} exists", book.name)));
        }
        if shelf.books.len() >= MAX_BOOKS {
            return Err(Status::resource_exhausted(format!(
                "shelves/{shelf_id} is full ({MAX_BOOKS} books)"
            )));
        }
        shelf.books.insert(book_id.to_owned(), book.clone());
        Ok(Response::new(book))
    }

    async fn get_book(&self, request: Request<GetBookRequest>) -> Result<Response<Book>, Status> {
        let name = request.into_inner().name;
        let shelves = self.shelves.lock().await;
        if !name.contains('/') {
            // The id alone: the first shelf that has it.
            let id = checked_id("name", &name)?;
            return shelves
                .values()
                .find_map(|shelf| shelf.books.get(id).cloned())
                .map(Response::new)
                .ok_or_else(|| Status::not_found(format!("no shelf has a book {id}")));
        }
        let (shelf_id, book_id) = book_name(&name)?;
        let book = shelves
            .get(&shelf_id)
            .ok_or_else(|| shelf_not_found(&shelf_id))?
            .books
            .get(&book_id)
            .ok_or_else(|| Status::not_found(format!("{name} not found")))?;
        Ok(Response::new(book.clone()))
    }

    async fn update_book(
        &self,
        request: Request<UpdateBookRequest>,
    ) -> Result<Response<Book>, Status> {
        let request = request.into_inner();
        let update = request
            .book
            .ok_or_else(|| Status::invalid_argument("book is missing"))?;
        let (shelf_id, book_id) = book_name(&update.name)?;
        let mask: Vec<&str> = if request.update_mask.trim().is_empty() {
            vec!["title", "author", "genre", "pages", "tags"]
        } else {
            request.update_mask.split(',').map(str::trim).collect()
        };
        let mut shelves = self.shelves.lock().await;
        let book = shelves
            .get_mut(&shelf_id)
            .ok_or_else(|| shelf_not_found(&shelf_id))?
            .books
            .get_mut(&book_id)
            .ok_or_else(|| Status::not_found(format!("{} not found", update.name)))?;
        let mut changed = book.clone();
        for field in mask {
            match field {
                "title" => changed.title = update.title.clone(),
                "author" => changed.author = update.author.clone(),
                "genre" => changed.genre = update.genre,
                "pages" => changed.pages = update.pages,
                "tags" => changed.tags = update.tags.clone(),
                other => {
                    return Err(Status::invalid_argument(format!(
                        "update_mask: {other:?} is not a field that can change \
                         (title, author, genre, pages, tags)"
                    )));
                }
            }
        }
        check_book(&changed)?;
        *book = changed;
        Ok(Response::new(book.clone()))
    }

    async fn delete_book(
        &self,
        request: Request<DeleteBookRequest>,
    ) -> Result<Response<Empty>, Status> {
        let name = request.into_inner().name;
        let (shelf_id, book_id) = book_name(&name)?;
        self.shelves
            .lock()
            .await
            .get_mut(&shelf_id)
            .ok_or_else(|| shelf_not_found(&shelf_id))?
            .books
            .remove(&book_id)
            .ok_or_else(|| Status::not_found(format!("{name} not found")))?;
        Ok(Response::new(Empty {}))
    }

    async fn search_books(
        &self,
        request: Request<SearchBooksRequest>,
    ) -> Result<Response<SearchBooksResponse>, Status> {
        let request = request.into_inner();
        let shelf_id = checked_id("shelf_id", &request.shelf_id)?;
        let genre = checked_genre(request.genre)?;
        if !(0..=MAX_PAGE_SIZE).contains(&request.page_size) {
            return Err(Status::invalid_argument(format!(
                "page_size {} is out of range: expected 0 to {MAX_PAGE_SIZE}",
                request.page_size
            )));
        }
        let page_size = match request.page_size {
            0 => DEFAULT_PAGE_SIZE,
            n => n,
        };
        let shelves = self.shelves.lock().await;
        let shelf = shelves
            .get(shelf_id)
            .ok_or_else(|| shelf_not_found(shelf_id))?;
        let found: Vec<&Book> = shelf
            .books
            .values()
            .filter(|book| genre == Genre::Unspecified || book.genre == genre as i32)
            .filter(|book| book.pages >= request.min_pages)
            .filter(|book| request.tags.iter().all(|tag| book.tags.contains(tag)))
            .collect();
        Ok(Response::new(SearchBooksResponse {
            total: i32::try_from(found.len()).unwrap_or(i32::MAX),
            books: found
                .into_iter()
                .take(usize::try_from(page_size).unwrap_or(0))
                .cloned()
                .collect(),
        }))
    }

    async fn lend_book(&self, request: Request<LendBookRequest>) -> Result<Response<Book>, Status> {
        let request = request.into_inner();
        let (shelf_id, book_id) = book_name(&request.name)?;
        let borrower = checked_text("borrower", &request.borrower, true)?;
        let mut shelves = self.shelves.lock().await;
        let book = shelves
            .get_mut(&shelf_id)
            .ok_or_else(|| shelf_not_found(&shelf_id))?
            .books
            .get_mut(&book_id)
            .ok_or_else(|| Status::not_found(format!("{} not found", request.name)))?;
        if book.lent {
            return Err(Status::failed_precondition(format!(
                "{} is lent to {} already",
                book.name, book.borrower
            )));
        }
        book.lent = true;
        borrower.clone_into(&mut book.borrower);
        book.times_lent = book.times_lent.saturating_add(1);
        Ok(Response::new(book.clone()))
    }

    type ListBooksStream = Pin<Box<dyn Stream<Item = Result<Book, Status>> + Send>>;

    async fn list_books(
        &self,
        request: Request<ListBooksRequest>,
    ) -> Result<Response<Self::ListBooksStream>, Status> {
        let request = request.into_inner();
        let shelf_id = checked_id("shelf_id", &request.shelf_id)?;
        let shelves = self.shelves.lock().await;
        let books: Vec<Book> = shelves
            .get(shelf_id)
            .ok_or_else(|| shelf_not_found(shelf_id))?
            .books
            .values()
            .cloned()
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(
            books.into_iter().map(Ok),
        ))))
    }
}

/// An id: 1 to 32 of `a-z`, `0-9` and `-`.
fn checked_id<'a>(field: &str, id: &'a str) -> Result<&'a str, Status> {
    let valid = !id.is_empty()
        && id.len() <= MAX_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid {
        Ok(id)
    } else {
        Err(Status::invalid_argument(format!(
            "{field} {id:?} is not an id: expected 1 to {MAX_ID} of a-z, 0-9 and '-'"
        )))
    }
}

/// Free text of at most 200 characters, `required` or not.
fn checked_text<'a>(field: &str, text: &'a str, required: bool) -> Result<&'a str, Status> {
    if required && text.trim().is_empty() {
        return Err(Status::invalid_argument(format!(
            "{field} must not be empty"
        )));
    }
    if text.chars().count() > MAX_TEXT {
        return Err(Status::invalid_argument(format!(
            "{field} is longer than {MAX_TEXT} characters"
        )));
    }
    Ok(text)
}

fn checked_genre(genre: i32) -> Result<Genre, Status> {
    Genre::try_from(genre)
        .map_err(|_| Status::invalid_argument(format!("genre {genre} is not a known genre")))
}

fn check_book(book: &Book) -> Result<(), Status> {
    checked_text("title", &book.title, true)?;
    checked_text("author", &book.author, false)?;
    checked_genre(book.genre)?;
    if book.pages > MAX_PAGES {
        return Err(Status::invalid_argument(format!(
            "pages {} is over the limit of {MAX_PAGES}",
            book.pages
        )));
    }
    if book.tags.len() > MAX_TAGS {
        return Err(Status::invalid_argument(format!(
            "{} tags are more than {MAX_TAGS}",
            book.tags.len()
        )));
    }
    for tag in &book.tags {
        checked_text("tag", tag, true)?;
    }
    Ok(())
}

/// The id in `shelves/<id>`.
fn shelf_name(name: &str) -> Result<String, Status> {
    let id = name.strip_prefix("shelves/").ok_or_else(|| {
        Status::invalid_argument(format!("{name:?} is not a shelf name (shelves/<id>)"))
    })?;
    Ok(checked_id("shelf id", id)?.to_owned())
}

/// The ids in `shelves/<shelf_id>/books/<book_id>`.
fn book_name(name: &str) -> Result<(String, String), Status> {
    let invalid = || {
        Status::invalid_argument(format!(
            "{name:?} is not a book name (shelves/<shelf_id>/books/<book_id>)"
        ))
    };
    let rest = name.strip_prefix("shelves/").ok_or_else(invalid)?;
    let (shelf_id, book_id) = rest.split_once("/books/").ok_or_else(invalid)?;
    Ok((
        checked_id("shelf id", shelf_id)?.to_owned(),
        checked_id("book id", book_id)?.to_owned(),
    ))
}

fn shelf_not_found(id: &str) -> Status {
    Status::not_found(format!("shelves/{id} not found"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // MICRO_REGISTRY may name an engine compiled in with a feature (etcd://…).
    micro::install();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let service = Service::builder("bookshelf")
        .version("1.0.0")
        .add_service(BookshelfServer::new(Arc::new(Library::default())))
        .build()?;
    let running = service.start().await?;
    #[allow(clippy::print_stdout)]
    {
        println!(
            "ready addr={} node={}",
            running.advertised_address(),
            running.node_id()
        );
    }
    running.run_until_signal().await?;
    Ok(())
}
