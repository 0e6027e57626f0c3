//! `flowlog top`: a live view of the running agent's open window through the control socket
//! (`Snapshot`, which reads the kernel maps without draining them): per-interface totals with
//! owners, top flows and top talkers by bytes or packets per second, REJECT counts with their
//! reasons, and how full the maps are. Keys sort and filter; it refreshes about once a second.

use std::{
    process::ExitCode,
    time::{Duration, Instant},
};

use clap::Args;
use ratatui::{
    Frame,
    crossterm::event::{self, Event, KeyCode, KeyEventKind},
    layout::{Constraint, Layout, Rect},
    style::{Modifier, Style},
    text::Line,
    widgets::{Block, Paragraph, Row, Table},
};

use super::{
    api::SocketArgs,
    top_view::{
        FLOW_HEADER, Filters, INTERFACE_HEADER, REJECT_HEADER, SortBy, TALKER_HEADER, View,
        flow_cells, interface_cells, parse_prefix, parse_protocol, plain, reject_cells,
        status_line, talker_cells, view,
    },
};
use crate::flowlogs::{
    control::{actions, call},
    snapshot::Snapshot,
};

#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Keys: s sort by bytes/packets, i interface, p protocol, o port, \
    a address prefix (Enter applies, Esc cancels, an empty value clears), c clear filters, q quit.

Examples:
  flowlog top
  flowlog top --sort packets --protocol udp --prefix 10.0.0.0/8
  flowlog top --once --json | jq '.Flows[0]'"
)]
pub struct TopArgs {
    /// Print one snapshot and exit (plain text; with --json, the snapshot as JSON).
    #[arg(long)]
    pub once: bool,
    /// With --once: the snapshot as JSON (every flow and interface, unfiltered).
    #[arg(long, requires = "once")]
    pub json: bool,
    /// Order the tables by bytes or packets per second.
    #[arg(long, value_enum, default_value_t = SortBy::Bytes)]
    pub sort: SortBy,
    /// Only interfaces matching this name (`*` globs).
    #[arg(long, value_name = "NAME")]
    pub iface: Option<String>,
    /// Only this protocol (tcp, udp, icmp, icmpv6 or a number).
    #[arg(long, value_name = "PROTO", value_parser = parse_protocol)]
    pub protocol: Option<u8>,
    /// Only flows with this source or destination port.
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
    /// Only flows with a source or destination address in this prefix.
    #[arg(long, value_name = "CIDR", value_parser = parse_prefix)]
    pub prefix: Option<ipnet::IpNet>,
    /// Refresh period in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub refresh_ms: u64,
    #[command(flatten)]
    pub socket: SocketArgs,
}

/// Which filter a key is being typed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Editing {
    Interface,
    Protocol,
    Port,
    Prefix,
}

impl Editing {
    fn prompt(self) -> &'static str {
        match self {
            Editing::Interface => "interface (glob)",
            Editing::Protocol => "protocol (tcp, udp, icmp, number)",
            Editing::Port => "port",
            Editing::Prefix => "address prefix (CIDR)",
        }
    }
}

/// The live view's state.
struct App {
    filters: Filters,
    sort: SortBy,
    editing: Option<(Editing, String)>,
    /// The last answer's problem, shown until the next good one.
    message: Option<String>,
    current: Option<Snapshot>,
    previous: Option<Snapshot>,
}

impl App {
    /// Applies one key; false to quit.
    fn key(&mut self, code: KeyCode) -> bool {
        if let Some((what, mut text)) = self.editing.take() {
            match code {
                KeyCode::Enter => self.apply(what, text.trim()),
                KeyCode::Esc => {}
                KeyCode::Backspace => {
                    text.pop();
                    self.editing = Some((what, text));
                }
                KeyCode::Char(c) => {
                    text.push(c);
                    self.editing = Some((what, text));
                }
                _ => self.editing = Some((what, text)),
            }
            return true;
        }
        let start = |what| Some((what, String::new()));
        match code {
            KeyCode::Char('q') | KeyCode::Esc => return false,
            KeyCode::Char('s') => self.sort = self.sort.toggled(),
            KeyCode::Char('i') => self.editing = start(Editing::Interface),
            KeyCode::Char('p') => self.editing = start(Editing::Protocol),
            KeyCode::Char('o') => self.editing = start(Editing::Port),
            KeyCode::Char('a') => self.editing = start(Editing::Prefix),
            KeyCode::Char('c') => self.filters = Filters::default(),
            _ => {}
        }
        true
    }

    fn apply(&mut self, what: Editing, text: &str) {
        self.message = None;
        let empty = text.is_empty();
        let result = match what {
            Editing::Interface => {
                self.filters.interface = (!empty).then(|| text.to_string());
                Ok(())
            }
            Editing::Protocol if empty => {
                self.filters.protocol = None;
                Ok(())
            }
            Editing::Protocol => parse_protocol(text).map(|p| self.filters.protocol = Some(p)),
            Editing::Port if empty => {
                self.filters.port = None;
                Ok(())
            }
            Editing::Port => text
                .parse()
                .map(|p| self.filters.port = Some(p))
                .map_err(|_| format!("{text:?} is not a port: give 0-65535")),
            Editing::Prefix if empty => {
                self.filters.prefix = None;
                Ok(())
            }
            Editing::Prefix => parse_prefix(text).map(|n| self.filters.prefix = Some(n)),
        };
        if let Err(e) = result {
            self.message = Some(e);
        }
    }

    fn refresh(&mut self, args: &TopArgs) {
        match fetch(args) {
            Ok(s) => {
                self.previous = self.current.take();
                self.current = Some(s);
                if self.editing.is_none() {
                    self.message = None;
                }
            }
            Err(e) => self.message = Some(e),
        }
    }

    fn draw(&self, frame: &mut Frame) {
        let [title, ifaces, flows, bottom, footer] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Length(self.iface_height()),
            Constraint::Fill(3),
            Constraint::Fill(2),
            Constraint::Length(1),
        ])
        .areas(frame.area());
        let empty = Snapshot::default();
        let snap = self.current.as_ref().unwrap_or(&empty);
        let v = view(snap, self.previous.as_ref(), &self.filters, self.sort);
        let status = match &self.current {
            Some(s) => format!("flowlog top  {}", status_line(s, self.sort, &self.filters)),
            None => "flowlog top  waiting for the agent...".to_string(),
        };
        frame.render_widget(
            Paragraph::new(status).style(Style::default().add_modifier(Modifier::BOLD)),
            title,
        );
        let rows: Vec<Vec<String>> = snap.interfaces.iter().map(interface_cells).collect();
        table(frame, ifaces, "Interfaces", &INTERFACE_HEADER, &rows);
        draw_tables(frame, flows, bottom, &v);
        let footer_text = match (&self.editing, &self.message) {
            (Some((what, text)), _) => format!("{}: {text}_", what.prompt()),
            (None, Some(m)) => m.clone(),
            (None, None) => "q quit  s sort  i iface  p proto  o port  a addr  c clear".into(),
        };
        frame.render_widget(Paragraph::new(Line::from(footer_text)), footer);
    }

    fn iface_height(&self) -> u16 {
        let n = self.current.as_ref().map_or(0, |s| s.interfaces.len());
        (n.min(6) + 3) as u16
    }
}

fn draw_tables(frame: &mut Frame, flows: Rect, bottom: Rect, v: &View) {
    let rows: Vec<Vec<String>> = v.flows.iter().map(flow_cells).collect();
    table(frame, flows, "Top flows", &FLOW_HEADER, &rows);
    // Side by side when both fit, else one above the other.
    let [talkers, rejects] = if bottom.width >= 160 {
        Layout::horizontal([Constraint::Length(60), Constraint::Fill(1)]).areas(bottom)
    } else {
        Layout::vertical([Constraint::Fill(1), Constraint::Fill(1)]).areas(bottom)
    };
    let rows: Vec<Vec<String>> = v.talkers.iter().map(talker_cells).collect();
    table(frame, talkers, "Top talkers", &TALKER_HEADER, &rows);
    let rows: Vec<Vec<String>> = v.rejects.iter().map(reject_cells).collect();
    table(frame, rejects, "Rejected", &REJECT_HEADER, &rows);
}

/// A bordered table whose columns are as wide as their widest cell.
fn table(frame: &mut Frame, area: Rect, title: &str, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<u16> = header.iter().map(|h| h.len() as u16).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len() as u16);
        }
    }
    let widget = Table::new(
        rows.iter().map(|r| Row::new(r.clone())),
        widths.into_iter().map(Constraint::Length),
    )
    .header(Row::new(header.to_vec()).style(Style::default().add_modifier(Modifier::BOLD)))
    .column_spacing(2)
    .block(Block::bordered().title(title.to_string()));
    frame.render_widget(widget, area);
}

/// One `Snapshot` call; errors as one line.
fn fetch(args: &TopArgs) -> Result<Snapshot, String> {
    let answer = call(
        &args.socket.control_socket,
        actions::SNAPSHOT,
        serde_json::Value::Null,
    )
    .map_err(|e| e.to_string())?;
    serde_json::from_value(answer).map_err(|e| format!("the agent's snapshot is not one: {e}"))
}

impl TopArgs {
    fn filters(&self) -> Filters {
        Filters {
            interface: self.iface.clone(),
            protocol: self.protocol,
            port: self.port,
            prefix: self.prefix,
        }
    }

    pub fn run(self) -> ExitCode {
        if self.once {
            return self.once();
        }
        let mut app = App {
            filters: self.filters(),
            sort: self.sort,
            editing: None,
            message: None,
            current: None,
            previous: None,
        };
        use std::io::IsTerminal as _;
        if !std::io::stdout().is_terminal() {
            eprintln!(
                "flowlog: error: flowlog top needs a terminal: use --once (or --once --json) to print one snapshot"
            );
            return ExitCode::FAILURE;
        }
        let mut terminal = match ratatui::try_init() {
            Ok(t) => t,
            Err(e) => {
                ratatui::restore();
                eprintln!("flowlog: error: cannot take over the terminal: {e}");
                return ExitCode::FAILURE;
            }
        };
        let result = self.live(&mut app, &mut terminal);
        ratatui::restore();
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("flowlog: error: the terminal failed: {e}");
                ExitCode::FAILURE
            }
        }
    }

    fn live(&self, app: &mut App, terminal: &mut ratatui::DefaultTerminal) -> std::io::Result<()> {
        let period = Duration::from_millis(self.refresh_ms);
        let mut next = Instant::now();
        loop {
            if Instant::now() >= next {
                app.refresh(self);
                next = Instant::now() + period;
            }
            terminal.draw(|f| app.draw(f))?;
            if event::poll(next.saturating_duration_since(Instant::now()))?
                && let Event::Key(k) = event::read()?
                && k.kind == KeyEventKind::Press
                && !app.key(k.code)
            {
                return Ok(());
            }
        }
    }

    fn once(&self) -> ExitCode {
        let snap = match fetch(self) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("flowlog: error: {e}");
                return ExitCode::FAILURE;
            }
        };
        if self.json {
            match serde_json::to_string_pretty(&snap) {
                Ok(text) => println!("{text}"),
                Err(e) => {
                    eprintln!("flowlog: error: cannot print the snapshot: {e}");
                    return ExitCode::FAILURE;
                }
            }
        } else {
            let filters = self.filters();
            let v = view(&snap, None, &filters, self.sort);
            print!("{}", plain(&snap, &v, self.sort, &filters, 20));
        }
        ExitCode::SUCCESS
    }
}
