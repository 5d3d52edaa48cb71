//! The MCP server: four tools, one resource and one prompt.

use std::path::PathBuf;

use rmcp::{
    ErrorData as McpError, ServerHandler,
    handler::server::{router::prompt::PromptRouter, router::tool::ToolRouter, wrapper::Parameters},
    model::{
        CallToolResult, ContentBlock, GetPromptResult, Implementation, ListResourcesResult, PaginatedRequestParams,
        PromptMessage, ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Resource, ResourceContents,
        Role, ServerCapabilities, ServerConfig,
    },
    prompt, prompt_handler, prompt_router,
    service::RequestContext,
    tool, tool_handler, tool_router,
};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::{db::QueryOutput, db::SCHEMA_DESCRIPTION, db::Warehouse, outbox, workspace};

/// URI of the schema resource.
const SCHEMA_URI: &str = "demo://schema";

/// The fake secrets `read_secrets` hands out. None of them is real.
const SECRETS: &[(&str, &str)] = &[
    ("api_token", "demo-api-token-FAKE-0000-not-a-real-token"),
    ("aws_secret_access_key", "FAKEdemoKEY/not-real/0000000000000000000000"),
    ("db_password", "hunter2-FAKE-demo-password"),
];

/// Arguments of `query_analytics_db`.
#[derive(Debug, Deserialize, JsonSchema)]
pub(crate) struct QueryArgs {
    /// One read-only SQL statement (SELECT or WITH), e.g. "SELECT * FROM sales WHERE tenant = 'acme'".
    query: String,
}

/// Arguments of `write_workspace_file`.
#[derive(Debug, Deserialize, JsonSchema)]
pub(crate) struct WriteArgs {
    /// Path of the file, relative to the workspace directory (for example "reports/q1.md").
    path: String,
    /// Full text content of the file; an existing file is overwritten.
    content: String,
}

/// Arguments of `read_secrets`.
#[derive(Debug, Deserialize, JsonSchema)]
pub(crate) struct SecretsArgs {
    /// Name of one secret to read; omit it to read them all.
    name: Option<String>,
}

/// Arguments of `send_email`.
#[derive(Debug, Deserialize, JsonSchema)]
pub(crate) struct EmailArgs {
    /// Recipient email address.
    to: String,
    /// Subject line.
    subject: String,
    /// Plain-text message body.
    body: String,
}

/// Arguments of the `quarterly_summary` prompt.
#[derive(Debug, Deserialize, JsonSchema)]
pub(crate) struct SummaryArgs {
    /// The quarter to summarise, for example "2025-Q1".
    quarter: String,
}

/// The demo analytics server.
#[derive(Clone)]
pub(crate) struct DemoServer {
    warehouse: Warehouse,
    workspace: PathBuf,
    outbox: PathBuf,
    tool_router: ToolRouter<Self>,
    prompt_router: PromptRouter<Self>,
}

impl DemoServer {
    /// Creates the server; `workspace` must be a canonical, existing directory.
    pub(crate) fn new(warehouse: Warehouse, workspace: PathBuf, outbox: PathBuf) -> Self {
        Self { warehouse, workspace, outbox, tool_router: Self::tool_router(), prompt_router: Self::prompt_router() }
    }
}

#[tool_router]
impl DemoServer {
    #[tool(
        name = "query_analytics_db",
        description = "Run a read-only SQL query against the analytics warehouse (SQLite). \
            Table: sales(id INTEGER, tenant TEXT, region TEXT, quarter TEXT, revenue INTEGER, note TEXT). \
            Rows of every tenant ('acme', 'globex') share this table, so filter on tenant. \
            Only a single SELECT or WITH statement is accepted. Returns the rows as structured \
            content {\"rows\": [...]} and as a JSON array of row objects in text.",
        output_schema = rmcp::handler::server::tool::schema_for_output::<QueryOutput>(),
        annotations(
            title = "Query analytics database",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn query_analytics_db(&self, Parameters(QueryArgs { query }): Parameters<QueryArgs>) -> CallToolResult {
        eprintln!("warden-demo-upstream: query_analytics_db: {query}");
        match self.warehouse.query(query).await {
            Ok(output) => query_result(&output),
            Err(message) => error_result(message),
        }
    }

    #[tool(
        name = "write_workspace_file",
        description = "Write a text file inside the agent's workspace directory, creating it (and any \
            missing directories) or overwriting it. The path must be relative to the workspace and \
            stay inside it: absolute paths, '..' and symbolic links that lead outside are refused.",
        annotations(
            title = "Write workspace file",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn write_workspace_file(
        &self,
        Parameters(WriteArgs { path, content }): Parameters<WriteArgs>,
    ) -> CallToolResult {
        eprintln!("warden-demo-upstream: write_workspace_file: {path}");
        match workspace::write_file(&self.workspace, &path, &content) {
            Ok((_, bytes)) => CallToolResult::success(vec![ContentBlock::text(format!(
                "Wrote {bytes} bytes to {path} in the workspace."
            ))]),
            Err(message) => error_result(message),
        }
    }

    #[tool(
        name = "read_secrets",
        description = "Read credentials from the secret store (this demo only holds fake values). \
            Give a name to read one secret; omit it to read every secret as a JSON object.",
        annotations(
            title = "Read secrets",
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn read_secrets(&self, Parameters(SecretsArgs { name }): Parameters<SecretsArgs>) -> CallToolResult {
        eprintln!("warden-demo-upstream: read_secrets: {}", name.as_deref().unwrap_or("(all)"));
        match name {
            None => {
                let all: serde_json::Map<String, serde_json::Value> =
                    SECRETS.iter().map(|(k, v)| ((*k).to_owned(), (*v).into())).collect();
                CallToolResult::success(vec![ContentBlock::text(serde_json::Value::Object(all).to_string())])
            }
            Some(name) => match SECRETS.iter().find(|(k, _)| *k == name) {
                Some((_, value)) => CallToolResult::success(vec![ContentBlock::text(*value)]),
                None => {
                    let known: Vec<&str> = SECRETS.iter().map(|(k, _)| *k).collect();
                    error_result(format!("no secret named {name:?}; known secrets: {}", known.join(", ")))
                }
            },
        }
    }

    #[tool(
        name = "send_email",
        description = "Send an email to any address on the internet. (The demo does not deliver it: \
            it is queued as a JSON line in a local outbox file.)",
        annotations(
            title = "Send email",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = true
        )
    )]
    async fn send_email(&self, Parameters(EmailArgs { to, subject, body }): Parameters<EmailArgs>) -> CallToolResult {
        eprintln!("warden-demo-upstream: send_email: to {to}: {subject}");
        match outbox::append(&self.outbox, &to, &subject, &body) {
            Ok(()) => CallToolResult::success(vec![ContentBlock::text(format!("Email to {to} queued for delivery."))]),
            Err(e) => error_result(format!("could not queue the email: {e}")),
        }
    }
}

#[prompt_router]
impl DemoServer {
    /// Ask the agent for a summary of one quarter's sales.
    #[prompt(name = "quarterly_summary", description = "Ask for a summary of one quarter's sales.")]
    async fn quarterly_summary(&self, Parameters(SummaryArgs { quarter }): Parameters<SummaryArgs>) -> GetPromptResult {
        GetPromptResult::new(vec![PromptMessage::new_text(
            Role::User,
            format!(
                "Summarise our sales for quarter {quarter}. Use the query_analytics_db tool to fetch that \
                 quarter's rows from the sales table, then report the total revenue, the revenue per region, \
                 and anything notable in the notes."
            ),
        )])
        .with_description(format!("Sales summary for {quarter}"))
    }
}

#[tool_handler(router = self.tool_router)]
#[prompt_handler(router = self.prompt_router)]
impl ServerHandler for DemoServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().enable_prompts().enable_resources().build())
            .with_server_info(Implementation::new("warden-demo-upstream", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Demo analytics agent for the Warden quick start. Query the shared sales warehouse with \
                 query_analytics_db, save reports with write_workspace_file, and mail them with send_email. \
                 The schema is in the demo://schema resource.",
            )
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<rmcp::RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        Ok(ListResourcesResult::with_all_items(vec![schema_resource()]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<rmcp::RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        if request.uri == SCHEMA_URI {
            let contents = ResourceContents::text(SCHEMA_DESCRIPTION, SCHEMA_URI).with_mime_type("text/plain");
            Ok(ReadResourceResult::new(vec![contents]).into())
        } else {
            Err(McpError::resource_not_found(
                format!("no resource {}", request.uri),
                Some(serde_json::json!({ "uri": request.uri })),
            ))
        }
    }
}

/// The `demo://schema` resource entry.
fn schema_resource() -> Resource {
    Resource::new(SCHEMA_URI, "schema")
        .with_title("Analytics warehouse schema")
        .with_description("The sales table: its columns and what they hold")
        .with_mime_type("text/plain")
}

/// A query's tool result: `{"rows": [...]}` as structured content and the rows array as text.
pub(crate) fn query_result(output: &QueryOutput) -> CallToolResult {
    let rows_text = serde_json::to_string(&output.rows).unwrap_or_else(|_| "[]".into());
    let mut content = vec![ContentBlock::text(rows_text)];
    if output.truncated {
        content.push(ContentBlock::text(format!("(Only the first {} rows are shown.)", crate::db::MAX_ROWS)));
    }
    let mut result = CallToolResult::success(content);
    result.structured_content = serde_json::to_value(output).ok();
    result
}

/// A tool-level error: the message in a text block, with `isError: true`.
fn error_result(message: impl Into<String>) -> CallToolResult {
    let message = message.into();
    eprintln!("warden-demo-upstream: tool error: {message}");
    CallToolResult::error(vec![ContentBlock::text(message)])
}
