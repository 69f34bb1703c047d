//! `nginx -t` on bad configurations: every configuration error the module produces, with its
//! exact message and nginx's ` in FILE:LINE` naming the right line; and a configuration that
//! uses all 36 directives at once is accepted.
//!
//! Errors found while a directive is read point at that directive's line. Errors found after
//! the whole `http{}` block was read (merge_loc_conf, init_main_conf) point at the closing `}`
//! of `http{}`, as they do with the C module: nginx's `cf` is there at that time.

mod common;
use common::*;

use std::fs;

// ---- helpers ------------------------------------------------------------------------------

/// An `http{}` body: a shared zone, `http_extra`, and one server with `server_extra` and a
/// location `/x` holding `loc`.
fn conf(http_extra: &str, server_extra: &str, loc: &str) -> String {
    format!(
        "push_stream_shared_memory_size 1m;\n\
         {http_extra}\n\
         server {{\n\
         listen 127.0.0.1:{{PORT}};\n\
         {server_extra}\n\
         location /x {{\n\
         {loc}\n\
         }}\n\
         }}"
    )
}

/// `conf` with a subscriber location.
fn subscriber_with(http_extra: &str, loc: &str) -> String {
    conf(
        http_extra,
        "",
        &format!("push_stream_subscriber;\npush_stream_channels_path $arg_id;\n{loc}"),
    )
}

fn rejects(http_body: &str, needle: &str, at_line: &str) {
    assert_rejects("", http_body, needle, at_line);
}

/// Like `assert_rejects`, for errors found after the `http{}` block was read: the line is the
/// closing `}` of `http{}` (the last line of the configuration).
fn rejects_at_http_end(http_body: &str, needle: &str) {
    let prefix = temp_prefix("nginx-t");
    let text = full_config(&prefix, 1, "", http_body, free_port());
    let line = text.lines().count();
    assert_eq!(text.lines().last(), Some("}"), "http block ends the file");
    let (ok, stderr, conf) = nginx_t(&text);
    assert!(
        !ok,
        "nginx -t accepted a bad configuration:\n{text}\n{stderr}"
    );
    let place = format!(" in {}:{line}", conf.display());
    assert!(
        stderr
            .lines()
            .any(|l| l.contains(needle) && l.ends_with(&place)),
        "expected a line with `{needle}` ending in `{place}` in nginx -t output:\n{stderr}"
    );
}

fn accepts(http_body: &str) {
    let prefix = temp_prefix("nginx-t");
    let text = full_config(&prefix, 1, "", http_body, free_port());
    let (ok, stderr, _) = nginx_t(&text);
    assert!(
        ok,
        "nginx -t rejected a good configuration:\n{text}\n{stderr}"
    );
}

/// A readable header template file; returns its absolute path.
fn header_file() -> String {
    let dir = temp_prefix("header-file");
    let path = dir.join("header.txt");
    fs::write(&path, "HEADER\n").unwrap();
    path.display().to_string()
}

fn zero_msg(directive: &str) -> String {
    format!("push stream module: {directive} cannot be zero.")
}

fn dup_msg(directive: &str) -> String {
    format!("\"{directive}\" directive is duplicate")
}

/// `http{}`-only directives with a valid value (push_stream_shared_memory_size aside).
const MAIN_DIRECTIVES: [(&str, &str); 12] = [
    ("push_stream_channel_deleted_message_text", "\"gone\""),
    ("push_stream_channel_inactivity_time", "30s"),
    ("push_stream_message_ttl", "10m"),
    ("push_stream_max_subscribers_per_channel", "10"),
    ("push_stream_max_messages_stored_per_channel", "10"),
    ("push_stream_max_channel_id_length", "10"),
    ("push_stream_max_number_of_channels", "10"),
    ("push_stream_max_number_of_wildcard_channels", "10"),
    ("push_stream_wildcard_channel_prefix", "\"wild_\""),
    ("push_stream_events_channel_id", "\"events\""),
    ("push_stream_ping_message_text", "\"ping\""),
    ("push_stream_timeout_with_body", "on"),
];

/// Location-level directives (http, server, location) with a valid value, and whether they are
/// also allowed inside `if` in a location (push_stream_header_template_file aside).
const LOC_DIRECTIVES: [(&str, &str, bool); 20] = [
    ("push_stream_channels_path", "$arg_id", true),
    ("push_stream_store_messages", "on", true),
    ("push_stream_channel_info_on_publish", "off", false),
    ("push_stream_allowed_origins", "\"*\"", false),
    ("push_stream_header_template", "\"head\"", false),
    ("push_stream_message_template", "\"~text~\"", false),
    ("push_stream_footer_template", "\"foot\"", false),
    ("push_stream_authorized_channels_only", "on", false),
    (
        "push_stream_allow_connections_to_events_channel",
        "on",
        true,
    ),
    ("push_stream_wildcard_channel_max_qtd", "3", false),
    ("push_stream_ping_message_interval", "10s", false),
    ("push_stream_subscriber_connection_ttl", "1m", false),
    ("push_stream_longpolling_connection_ttl", "30s", false),
    ("push_stream_websocket_allow_publish", "on", false),
    ("push_stream_detached_subscribers", "on", false),
    ("push_stream_last_received_message_time", "$arg_time", true),
    ("push_stream_last_received_message_tag", "$arg_tag", true),
    ("push_stream_last_event_id", "$arg_last_event_id", true),
    ("push_stream_user_agent", "$arg_ua", false),
    (
        "push_stream_padding_by_user_agent",
        "\"Msie,1024,512\"",
        false,
    ),
];

const ROLE_DIRECTIVES: [&str; 3] = [
    "push_stream_channels_statistics",
    "push_stream_publisher",
    "push_stream_subscriber",
];

const FLAG_DIRECTIVES: [&str; 7] = [
    "push_stream_timeout_with_body",
    "push_stream_store_messages",
    "push_stream_channel_info_on_publish",
    "push_stream_authorized_channels_only",
    "push_stream_allow_connections_to_events_channel",
    "push_stream_websocket_allow_publish",
    "push_stream_detached_subscribers",
];

const NUMBER_DIRECTIVES: [&str; 6] = [
    "push_stream_max_subscribers_per_channel",
    "push_stream_max_messages_stored_per_channel",
    "push_stream_max_channel_id_length",
    "push_stream_max_number_of_channels",
    "push_stream_max_number_of_wildcard_channels",
    "push_stream_wildcard_channel_max_qtd",
];

const SECONDS_DIRECTIVES: [&str; 2] = [
    "push_stream_channel_inactivity_time",
    "push_stream_message_ttl",
];

const MSEC_DIRECTIVES: [&str; 3] = [
    "push_stream_ping_message_interval",
    "push_stream_subscriber_connection_ttl",
    "push_stream_longpolling_connection_ttl",
];

fn is_main(directive: &str) -> bool {
    directive == "push_stream_shared_memory_size"
        || MAIN_DIRECTIVES.iter().any(|(d, _)| *d == directive)
}

/// `directive value;` on a line of its own (marked `# bad`), placed in `http{}` for main
/// directives and in a publisher location otherwise.
fn with_bad_line(directive: &str, value: &str) -> String {
    let line = format!("{directive} {value}; # bad");
    if is_main(directive) {
        conf(&line, "", "")
    } else {
        // A wildcard prefix, so that push_stream_wildcard_channel_max_qtd is otherwise valid.
        conf(
            "push_stream_wildcard_channel_prefix \"wild_\";",
            "",
            &format!("push_stream_publisher;\npush_stream_channels_path $arg_id;\n{line}"),
        )
    }
}

// ---- zero values --------------------------------------------------------------------------

#[test]
fn every_zero_rejecting_directive_says_cannot_be_zero_on_its_line() {
    // The http{}-only ones, in http{}.
    for d in [
        "push_stream_message_ttl",
        "push_stream_max_subscribers_per_channel",
        "push_stream_max_messages_stored_per_channel",
        "push_stream_max_channel_id_length",
        "push_stream_max_number_of_channels",
        "push_stream_max_number_of_wildcard_channels",
    ] {
        let line = format!("{d} 0;");
        rejects(&conf(&line, "", ""), &zero_msg(d), &line);
    }
    // The location-level ones, in each of their contexts.
    for d in [
        "push_stream_ping_message_interval",
        "push_stream_subscriber_connection_ttl",
        "push_stream_longpolling_connection_ttl",
        "push_stream_wildcard_channel_max_qtd",
    ] {
        let line = format!("{d} 0;");
        let prefix = "push_stream_wildcard_channel_prefix \"wild_\";";
        let sub = "push_stream_subscriber;\npush_stream_channels_path $arg_id;";
        let in_http = conf(&format!("{prefix}\n{line}"), "", sub);
        let in_server = conf(prefix, &line, sub);
        let in_location = conf(prefix, "", &format!("{sub}\n{line}"));
        for body in [in_http, in_server, in_location] {
            rejects(&body, &zero_msg(d), &line);
        }
    }
}

#[test]
fn zero_with_a_unit_is_still_zero() {
    for (d, v) in [
        ("push_stream_message_ttl", "0s"),
        ("push_stream_message_ttl", "0m"),
        ("push_stream_ping_message_interval", "0ms"),
        ("push_stream_subscriber_connection_ttl", "0s"),
        ("push_stream_longpolling_connection_ttl", "0h"),
        ("push_stream_max_number_of_channels", "00"),
    ] {
        rejects(&with_bad_line(d, v), &zero_msg(d), "# bad");
    }
}

#[test]
fn zero_is_accepted_where_the_c_module_accepts_it() {
    // push_stream_channel_inactivity_time 0 is allowed (docs/reference.md section 1.2).
    accepts(&conf(
        "push_stream_channel_inactivity_time 0;",
        "",
        "push_stream_publisher;\npush_stream_channels_path $arg_id;",
    ));
}

/// `push_stream_max_channels_per_request` (new, not in the C module: how many distinct
/// channels one request may name; http{} and location level, default 100): zero and values
/// that are not numbers are refused on their line, like the other numeric directives.
#[test]
fn max_channels_per_request_zero_and_non_numbers_are_rejected_on_their_line() {
    let d = "push_stream_max_channels_per_request";
    let sub = "push_stream_subscriber;\npush_stream_channels_path $arg_id;";
    for v in ["0", "00"] {
        let line = format!("{d} {v};");
        rejects(&conf(&line, "", sub), &zero_msg(d), &line);
        rejects(
            &conf("", "", &format!("{sub}\n{line}")),
            &zero_msg(d),
            &line,
        );
    }
    for v in ["abc", "-1", "1k", "9223372036854775808"] {
        rejects(
            &with_bad_line(d, v),
            &format!("push stream module: invalid value for {d}: invalid number \"{v}\""),
            "# bad",
        );
    }
    accepts(&conf(&format!("{d} 3;"), "", sub));
    accepts(&conf("", "", &format!("{sub}\n{d} 1;")));
    accepts(&conf(
        "",
        "",
        &format!("push_stream_publisher admin;\npush_stream_channels_path $arg_id;\n{d} 250;"),
    ));
}

// ---- location roles -----------------------------------------------------------------------

#[test]
fn invalid_publisher_mode_is_the_c_message() {
    let line = "push_stream_publisher unknown;";
    rejects(
        &conf("", "", &format!("{line}\npush_stream_channels_path $arg_id;")),
        "push stream module: invalid push_stream_publisher mode value: unknown, accepted values (normal, admin)",
        line,
    );
    let line = "push_stream_publisher admins;";
    rejects(
        &conf("", "", &format!("{line}\npush_stream_channels_path $arg_id;")),
        "push stream module: invalid push_stream_publisher mode value: admins, accepted values (normal, admin)",
        line,
    );
}

#[test]
fn invalid_subscriber_mode_is_the_c_message() {
    for mode in ["unknown", "poll", "long_polling", "\"\""] {
        let line = format!("push_stream_subscriber {mode};");
        let shown = mode.trim_matches('"');
        rejects(
            &conf("", "", &format!("{line}\npush_stream_channels_path $arg_id;")),
            &format!(
                "push stream module: invalid push_stream_subscriber mode value: {shown}, accepted values (streaming, polling, long-polling, eventsource, websocket)"
            ),
            &line,
        );
    }
}

#[test]
fn every_mode_is_accepted_in_any_case() {
    for mode in ["", "normal", "admin", "NORMAL", "Admin"] {
        accepts(&conf(
            "",
            "",
            &format!("push_stream_publisher {mode};\npush_stream_channels_path $arg_id;"),
        ));
    }
    for mode in [
        "",
        "streaming",
        "polling",
        "long-polling",
        "eventsource",
        "websocket",
        "STREAMING",
        "Long-Polling",
        "EventSource",
        "WebSocket",
    ] {
        accepts(&conf(
            "",
            "",
            &format!("push_stream_subscriber {mode};\npush_stream_channels_path $arg_id;"),
        ));
    }
    accepts(&conf(
        "",
        "",
        "push_stream_channels_statistics;\npush_stream_channels_path $arg_id;",
    ));
}

#[test]
fn a_role_twice_in_one_location_is_duplicate() {
    for (first, second, name) in [
        (
            "push_stream_publisher;",
            "push_stream_publisher admin;",
            "push_stream_publisher",
        ),
        (
            "push_stream_publisher admin;",
            "push_stream_publisher;",
            "push_stream_publisher",
        ),
        (
            "push_stream_subscriber;",
            "push_stream_subscriber polling;",
            "push_stream_subscriber",
        ),
        (
            "push_stream_channels_statistics;",
            "push_stream_channels_statistics;",
            "push_stream_channels_statistics",
        ),
        // Two different roles: the second one is the duplicate.
        (
            "push_stream_publisher;",
            "push_stream_subscriber;",
            "push_stream_subscriber",
        ),
        (
            "push_stream_subscriber;",
            "push_stream_publisher;",
            "push_stream_publisher",
        ),
        (
            "push_stream_channels_statistics;",
            "push_stream_publisher;",
            "push_stream_publisher",
        ),
    ] {
        let loc = format!("{first}\n{second} # second\npush_stream_channels_path $arg_id;");
        rejects(&conf("", "", &loc), &dup_msg(name), "# second");
    }
}

#[test]
fn a_role_without_a_channels_path_fails_at_the_end_of_http() {
    for role in [
        "push_stream_publisher;",
        "push_stream_subscriber;",
        "push_stream_subscriber websocket;",
        "push_stream_channels_statistics;",
    ] {
        rejects_at_http_end(
            &conf("", "", role),
            "push stream module: push_stream_channels_path must be set.",
        );
    }
    // Inherited from http{} or server{} is enough.
    accepts(&conf(
        "push_stream_channels_path $arg_id;",
        "",
        "push_stream_publisher;",
    ));
    accepts(&conf(
        "",
        "push_stream_channels_path $arg_id;",
        "push_stream_publisher;",
    ));
}

// ---- shared memory ------------------------------------------------------------------------

#[test]
fn a_used_module_without_shared_memory_fails_at_the_end_of_http() {
    let body = "server {\n\
                listen 127.0.0.1:{PORT};\n\
                location /x { push_stream_publisher; push_stream_channels_path $arg_id; }\n\
                }";
    rejects_at_http_end(
        body,
        "push stream module: push_stream_shared_memory_size must be set.",
    );
    // Not used: no zone needed.
    accepts("server { listen 127.0.0.1:{PORT}; location /x { return 204; } }");
}

#[test]
fn shared_memory_below_32_pages_is_refused() {
    for size in ["100k", "0", "124k", "4096"] {
        let line = format!("push_stream_shared_memory_size {size};");
        rejects(
            &format!("{line}\nserver {{ listen 127.0.0.1:{{PORT}}; }}"),
            "The push_stream_shared_memory_size value must be at least 128KiB",
            &line,
        );
    }
    // Rounded up to whole pages first, as in C: 125k is 32 pages.
    accepts("push_stream_shared_memory_size 125k;\nserver { listen 127.0.0.1:{PORT}; }");
    accepts("push_stream_shared_memory_size 128k;\nserver { listen 127.0.0.1:{PORT}; }");
}

#[test]
fn bad_shared_memory_sizes_name_the_directive() {
    for size in ["abc", "1t", "1.5m", "-1m", "1mb"] {
        let line = format!("push_stream_shared_memory_size {size};");
        rejects(
            &line,
            &format!(
                "push stream module: invalid push_stream_shared_memory_size: invalid size value \"{size}\""
            ),
            &line,
        );
    }
}

#[test]
fn shared_memory_size_twice_is_duplicate() {
    rejects(
        "push_stream_shared_memory_size 1m;\npush_stream_shared_memory_size 2m other; # second",
        &dup_msg("push_stream_shared_memory_size"),
        "# second",
    );
}

#[test]
fn shared_memory_zone_name_errors() {
    let line = "push_stream_shared_memory_size 1m \"\";";
    rejects(
        line,
        "push stream module: invalid push_stream_shared_memory_size: empty shared memory zone name",
        line,
    );
    // A name another module already declared: nginx's message, then ours.
    let line = "push_stream_shared_memory_size 1m taken;";
    let body = format!("limit_req_zone $binary_remote_addr zone=taken:1m rate=1r/s;\n{line}");
    rejects(
        &body,
        "the shared memory zone \"taken\" is already declared for a different use",
        line,
    );
    rejects(
        &body,
        "push stream module: cannot create shared memory zone \"taken\"",
        line,
    );
    accepts("push_stream_shared_memory_size 1m my_zone;\nserver { listen 127.0.0.1:{PORT}; }");
}

// ---- templates ----------------------------------------------------------------------------

#[test]
fn a_blank_message_template_is_refused() {
    for context in ["http", "server", "location"] {
        let line = "push_stream_message_template \"\";";
        let sub = "push_stream_subscriber;\npush_stream_channels_path $arg_id;";
        let body = match context {
            "http" => conf(line, "", sub),
            "server" => conf("", line, sub),
            _ => conf("", "", &format!("{sub}\n{line}")),
        };
        rejects(
            &body,
            "push stream module: push_stream_message_template cannot be blank.",
            line,
        );
    }
}

#[test]
fn header_template_file_that_cannot_be_opened() {
    let line = "push_stream_header_template_file /nonexistent/push-stream/header.txt;";
    rejects(
        &subscriber_with("", line),
        "push stream module: unable to open file \"/nonexistent/push-stream/header.txt\" for header template",
        line,
    );
    // A relative path is taken from the configuration's directory, as nginx does for its files.
    let line = "push_stream_header_template_file missing-header.txt;";
    rejects(
        &subscriber_with("", line),
        "/conf/missing-header.txt\" for header template",
        line,
    );
    // A directory is not a readable file either.
    let line = "push_stream_header_template_file /;";
    rejects(
        &subscriber_with("", line),
        "push stream module: unable to open file \"/\" for header template",
        line,
    );
}

#[test]
fn header_template_and_header_template_file_at_one_level() {
    let path = header_file();
    // file after template (and file twice): the C module's own message.
    let msg = "\"push_stream_header_template_file\" directive is duplicate or template set by 'push_stream_header_template'";
    for first in [
        "push_stream_header_template \"h\";".to_string(),
        format!("push_stream_header_template_file {path};"),
    ] {
        let loc = format!("{first}\npush_stream_header_template_file {path}; # second");
        rejects(&subscriber_with("", &loc), msg, "# second");
    }
    // template after file: nginx's duplicate message.
    let loc = format!(
        "push_stream_header_template_file {path};\npush_stream_header_template \"h\"; # second"
    );
    rejects(
        &subscriber_with("", &loc),
        &dup_msg("push_stream_header_template"),
        "# second",
    );
    // At different levels the inner one wins: accepted both ways.
    accepts(&subscriber_with(
        &format!("push_stream_header_template_file {path};"),
        "push_stream_header_template \"h\";",
    ));
    accepts(&subscriber_with(
        "push_stream_header_template \"h\";",
        &format!("push_stream_header_template_file {path};"),
    ));
}

// ---- wildcard channels --------------------------------------------------------------------

#[test]
fn wildcard_max_qtd_needs_a_prefix() {
    let qtd = "push_stream_wildcard_channel_max_qtd 3;";
    let msg = "push stream module: cannot set wildcard channel max qtd if push_stream_wildcard_channel_prefix is not set or blank.";
    // No prefix, qtd in location / server / http.
    rejects_at_http_end(&subscriber_with("", qtd), msg);
    rejects_at_http_end(
        &conf(
            "",
            qtd,
            "push_stream_subscriber;\npush_stream_channels_path $arg_id;",
        ),
        msg,
    );
    rejects_at_http_end(&subscriber_with(qtd, ""), msg);
    // A blank prefix is no prefix.
    rejects_at_http_end(
        &subscriber_with("push_stream_wildcard_channel_prefix \"\";", qtd),
        msg,
    );
    accepts(&subscriber_with(
        "push_stream_wildcard_channel_prefix \"wild_\";",
        qtd,
    ));
}

#[test]
fn wildcard_max_qtd_above_the_max_number_of_wildcard_channels() {
    let msg = "push stream module: max number of wildcard channels cannot be smaller than value in push_stream_wildcard_channel_max_qtd.";
    let http = "push_stream_wildcard_channel_prefix \"wild_\";\npush_stream_max_number_of_wildcard_channels 2;";
    rejects_at_http_end(
        &subscriber_with(http, "push_stream_wildcard_channel_max_qtd 3;"),
        msg,
    );
    rejects_at_http_end(
        &subscriber_with(
            &format!("{http}\npush_stream_wildcard_channel_max_qtd 5;"),
            "",
        ),
        msg,
    );
    // Equal is fine.
    accepts(&subscriber_with(
        http,
        "push_stream_wildcard_channel_max_qtd 2;",
    ));
}

// ---- padding ------------------------------------------------------------------------------

#[test]
fn padding_values_that_do_not_match_the_pattern() {
    for value in ["user_agent,as,df", "user_agent;10;0", ",1,2", "ua,1"] {
        let line = format!("push_stream_padding_by_user_agent \"{value}\";");
        rejects(
            &subscriber_with("", &line),
            &format!("push stream module: padding pattern not match the value {value}"),
            &line,
        );
    }
}

#[test]
fn padding_values_where_a_later_rule_is_wrong() {
    for (value, rest) in [
        (
            "user_agent,10,0:other_user_agent;20;0:another_user_agent,30,0",
            "other_user_agent;20;0:another_user_agent,30,0",
        ),
        ("ua,1,2::x,1,2", ":x,1,2"),
        // H or M too large for a number.
        ("ua,99999999999999999999,1", "ua,99999999999999999999,1"),
    ] {
        let line = format!("push_stream_padding_by_user_agent \"{value}\";");
        rejects(
            &subscriber_with("", &line),
            &format!("push stream module: error applying padding pattern to {rest}"),
            &line,
        );
    }
}

#[test]
fn a_padding_user_agent_regex_that_does_not_compile() {
    let line = "push_stream_padding_by_user_agent \"(Msie,1024,512\";";
    rejects(
        &subscriber_with("", line),
        "push stream module: error applying padding pattern to (Msie: ",
        line,
    );
    let line = "push_stream_padding_by_user_agent \"ok,1,1:[x,2,2\";";
    rejects(
        &subscriber_with("", line),
        "push stream module: error applying padding pattern to [x: ",
        line,
    );
}

// ---- values of the wrong kind -------------------------------------------------------------

#[test]
fn bad_flag_values_name_the_directive() {
    for d in FLAG_DIRECTIVES {
        for v in ["yes", "1", "\"\""] {
            let shown = v.trim_matches('"');
            rejects(
                &with_bad_line(d, v),
                &format!(
                    "push stream module: invalid value for {d}: invalid value \"{shown}\", it must be \"on\" or \"off\""
                ),
                "# bad",
            );
        }
        // Case does not matter.
        for v in ["ON", "Off"] {
            accepts(&with_bad_line(d, v));
        }
    }
}

#[test]
fn bad_numbers_name_the_directive() {
    for d in NUMBER_DIRECTIVES {
        for v in ["-1", "abc", "1k", "9223372036854775808"] {
            rejects(
                &with_bad_line(d, v),
                &format!("push stream module: invalid value for {d}: invalid number \"{v}\""),
                "# bad",
            );
        }
    }
}

#[test]
fn bad_times_name_the_directive() {
    for d in SECONDS_DIRECTIVES.iter().chain(MSEC_DIRECTIVES.iter()) {
        for v in ["abc", "-1", "1.5h", "10x", "2147483648"] {
            rejects(
                &with_bad_line(d, v),
                &format!("push stream module: invalid value for {d}: invalid time value \"{v}\""),
                "# bad",
            );
        }
    }
    // Seconds directives refuse milliseconds; millisecond ones refuse years and months (nginx).
    for d in SECONDS_DIRECTIVES {
        rejects(
            &with_bad_line(d, "500ms"),
            &format!("push stream module: invalid value for {d}: invalid time value \"500ms\""),
            "# bad",
        );
        accepts(&with_bad_line(d, "\"1h 30m\""));
    }
    for d in MSEC_DIRECTIVES {
        for v in ["1y", "1M", "25d"] {
            rejects(
                &with_bad_line(d, v),
                &format!("push stream module: invalid value for {d}: invalid time value \"{v}\""),
                "# bad",
            );
        }
        accepts(&with_bad_line(d, "500ms"));
        accepts(&with_bad_line(d, "\"1s 500ms\""));
    }
}

#[test]
fn bad_events_channel_ids() {
    rejects(
        &with_bad_line("push_stream_events_channel_id", "\"\""),
        "push stream module: push_stream_events_channel_id cannot be empty.",
        "# bad",
    );
    for v in ["ALL", "a*b", "*"] {
        rejects(
            &with_bad_line("push_stream_events_channel_id", v),
            "push stream module: push_stream_events_channel_id cannot be ALL or contain '*'.",
            "# bad",
        );
    }
}

#[test]
fn a_complex_value_that_does_not_compile_is_reported_on_its_line() {
    for d in [
        "push_stream_channels_path",
        "push_stream_allowed_origins",
        "push_stream_last_received_message_time",
        "push_stream_last_received_message_tag",
        "push_stream_last_event_id",
        "push_stream_user_agent",
    ] {
        // nginx's own message (ngx_http_compile_complex_value).
        rejects(&with_bad_line(d, "\"$\""), "invalid variable name", "# bad");
    }
}

// ---- duplicates ---------------------------------------------------------------------------

#[test]
fn every_value_directive_twice_at_one_level_is_duplicate() {
    for (d, v) in MAIN_DIRECTIVES {
        let body = conf(&format!("{d} {v};\n{d} {v}; # second"), "", "");
        rejects(&body, &dup_msg(d), "# second");
    }
    for (d, v, _) in LOC_DIRECTIVES {
        let twice = format!("{d} {v};\n{d} {v}; # second");
        let prefix = "push_stream_wildcard_channel_prefix \"wild_\";";
        // In a location, in a server and in http{}.
        for body in [
            conf(prefix, "", &twice),
            conf(prefix, &twice, ""),
            conf(&format!("{prefix}\n{twice}"), "", ""),
        ] {
            rejects(&body, &dup_msg(d), "# second");
        }
        // At different levels it is inheritance, not a duplicate.
        accepts(&conf(prefix, &format!("{d} {v};"), &format!("{d} {v};")));
    }
}

// ---- argument counts ----------------------------------------------------------------------

#[test]
fn wrong_argument_counts_are_nginx_errors() {
    let msg = |d: &str| format!("invalid number of arguments in \"{d}\" directive");
    for (d, v) in MAIN_DIRECTIVES {
        rejects(&with_bad_line(d, ""), &msg(d), "# bad");
        rejects(&with_bad_line(d, &format!("{v} {v}")), &msg(d), "# bad");
    }
    for (d, v, _) in LOC_DIRECTIVES {
        rejects(&with_bad_line(d, ""), &msg(d), "# bad");
        rejects(&with_bad_line(d, &format!("{v} {v}")), &msg(d), "# bad");
    }
    let path = header_file();
    let d = "push_stream_header_template_file";
    rejects(&with_bad_line(d, ""), &msg(d), "# bad");
    rejects(
        &with_bad_line(d, &format!("{path} {path}")),
        &msg(d),
        "# bad",
    );
    let d = "push_stream_shared_memory_size";
    for args in ["", "1m name extra"] {
        let line = format!("{d} {args}; # bad");
        rejects(&line, &msg(d), "# bad");
    }
    let roles = [
        ("push_stream_channels_statistics", "on"),
        ("push_stream_publisher", "admin admin"),
        ("push_stream_subscriber", "polling polling"),
    ];
    for (d, args) in roles {
        let loc = format!("push_stream_channels_path $arg_id;\n{d} {args}; # bad");
        rejects(&conf("", "", &loc), &msg(d), "# bad");
    }
}

// ---- contexts and unknown directives ------------------------------------------------------

#[test]
fn http_only_directives_are_not_allowed_in_server_or_location() {
    let mut all: Vec<(&str, &str)> = MAIN_DIRECTIVES.to_vec();
    all.push(("push_stream_shared_memory_size", "1m"));
    for (d, v) in all {
        let line = format!("{d} {v}; # bad");
        let msg = format!("\"{d}\" directive is not allowed here");
        rejects(&conf("", &line, ""), &msg, "# bad");
        rejects(&conf("", "", &line), &msg, "# bad");
    }
}

#[test]
fn role_directives_are_only_allowed_in_a_location() {
    for d in ROLE_DIRECTIVES {
        let line = format!("{d}; # bad");
        let msg = format!("\"{d}\" directive is not allowed here");
        rejects(
            &conf("", &line, "push_stream_channels_path $arg_id;"),
            &msg,
            "# bad",
        );
        rejects(
            &conf(&line, "", "push_stream_channels_path $arg_id;"),
            &msg,
            "# bad",
        );
        // Not inside `if` in a location either.
        let loc = format!("push_stream_channels_path $arg_id;\nif ($arg_a) {{\n{line}\n}}");
        rejects(&conf("", "", &loc), &msg, "# bad");
    }
    // And not outside http{}.
    assert_rejects(
        "push_stream_publisher; # bad",
        "server { listen 127.0.0.1:{PORT}; }",
        "\"push_stream_publisher\" directive is not allowed here",
        "# bad",
    );
}

#[test]
fn location_directives_inside_if_only_where_the_c_module_allows() {
    for (d, v, in_if) in LOC_DIRECTIVES {
        let line = format!("{d} {v}; # in-if");
        let loc = format!(
            "push_stream_subscriber;\npush_stream_channels_path $arg_id;\nif ($arg_a) {{\n{line}\n}}"
        );
        let body = conf("push_stream_wildcard_channel_prefix \"wild_\";", "", &loc);
        if in_if {
            accepts(&body);
        } else {
            rejects(
                &body,
                &format!("\"{d}\" directive is not allowed here"),
                "# in-if",
            );
        }
    }
    let path = header_file();
    let d = "push_stream_header_template_file";
    let loc = format!(
        "push_stream_subscriber;\npush_stream_channels_path $arg_id;\nif ($arg_a) {{\n{d} {path}; # in-if\n}}"
    );
    rejects(
        &conf("", "", &loc),
        &format!("\"{d}\" directive is not allowed here"),
        "# in-if",
    );
}

#[test]
fn removed_directives_are_unknown() {
    for (d, args) in [
        ("push_stream_websocket", ""),
        ("push_stream_eventsource_support", "on"),
        ("push_stream_keepalive", "on"),
        ("push_stream_content_type", "text/plain"),
        ("push_stream_broadcast_channel_prefix", "b_"),
        ("push_stream_broadcast_channel_max_qtd", "3"),
        ("push_stream_max_number_of_broadcast_channels", "3"),
        ("push_stream_shared_memory_cleanup_objects_ttl", "30s"),
        ("push_stream_max_reserved_memory", "1m"),
        ("push_stream_min_message_buffer_timeout", "1m"),
        ("push_stream_max_message_buffer_length", "10"),
    ] {
        let line = format!("{d} {args}; # bad");
        rejects(
            &conf(
                "",
                "",
                &format!("push_stream_subscriber;\npush_stream_channels_path $arg_id;\n{line}"),
            ),
            &format!("unknown directive \"{d}\""),
            "# bad",
        );
    }
}

// ---- test-only directives (feature test-hooks) ---------------------------------------------

#[test]
fn test_hook_directive_errors() {
    let line = "push_stream_test_hook nope;";
    rejects(
        &conf("", "", line),
        "push stream module: invalid push_stream_test_hook value: nope, accepted values (ok, panic, hold, inbox, pause-inbox, die-in-lock)",
        line,
    );
    rejects(
        &conf(
            "",
            "",
            "push_stream_test_hook ok;\npush_stream_test_hook ok; # second",
        ),
        &dup_msg("push_stream_test_hook"),
        "# second",
    );
    let line = "push_stream_test_bridge_ticks 0;";
    rejects(
        &conf(line, "", "push_stream_test_hook ok;"),
        &zero_msg("push_stream_test_bridge_ticks"),
        line,
    );
    let line = "push_stream_test_bridge_ticks abc;";
    rejects(
        &conf(line, "", "push_stream_test_hook ok;"),
        "push stream module: invalid push_stream_test_bridge_ticks: invalid time value \"abc\"",
        line,
    );
}

// ---- all 36 directives at once ------------------------------------------------------------

/// The 36 directives of the C module, read from the command table in src/conf/directives.rs (test-only
/// ones left out).
fn command_table_names() -> Vec<String> {
    let src = fs::read_to_string(repo().join("src/conf/directives.rs")).unwrap();
    let mut names = vec![];
    let mut test_only = false;
    for line in src.lines() {
        let l = line.trim();
        if l.starts_with("#[cfg(feature = \"test-hooks\")]") {
            test_only = true;
            continue;
        }
        if let Some(rest) = l.strip_prefix("command(c\"") {
            if !test_only {
                names.push(rest.split('"').next().unwrap().to_string());
            }
        }
        test_only = false;
    }
    names
}

#[test]
fn a_configuration_with_all_36_directives_is_accepted_and_serves() {
    let path = header_file();
    let body = format!(
        "push_stream_shared_memory_size 2m all_directives;\n\
         push_stream_channel_deleted_message_text \"gone\";\n\
         push_stream_channel_inactivity_time 30s;\n\
         push_stream_message_ttl 10m;\n\
         push_stream_max_subscribers_per_channel 100;\n\
         push_stream_max_messages_stored_per_channel 20;\n\
         push_stream_max_channel_id_length 64;\n\
         push_stream_max_number_of_channels 1000;\n\
         push_stream_max_number_of_wildcard_channels 50;\n\
         push_stream_wildcard_channel_prefix \"wild_\";\n\
         push_stream_events_channel_id \"events\";\n\
         push_stream_ping_message_text \"ping\";\n\
         push_stream_timeout_with_body on;\n\
         push_stream_header_template_file {path};\n\
         push_stream_ping_message_interval 10s;\n\
         server {{\n\
           listen 127.0.0.1:{{PORT}};\n\
           push_stream_footer_template \"bye\";\n\
           push_stream_subscriber_connection_ttl 1m;\n\
           push_stream_allowed_origins \"*\";\n\
           location /stats {{\n\
             push_stream_channels_statistics;\n\
             push_stream_channels_path $arg_id;\n\
           }}\n\
           location /pub {{\n\
             push_stream_publisher admin;\n\
             push_stream_channels_path $arg_id;\n\
             push_stream_store_messages on;\n\
             push_stream_channel_info_on_publish off;\n\
           }}\n\
           location ~ /sub/(.*) {{\n\
             push_stream_subscriber long-polling;\n\
             push_stream_channels_path $1;\n\
             push_stream_header_template \"head\";\n\
             push_stream_message_template \"~id~:~text~\";\n\
             push_stream_authorized_channels_only on;\n\
             push_stream_allow_connections_to_events_channel on;\n\
             push_stream_wildcard_channel_max_qtd 3;\n\
             push_stream_longpolling_connection_ttl 30s;\n\
             push_stream_websocket_allow_publish on;\n\
             push_stream_last_received_message_time $arg_time;\n\
             push_stream_last_received_message_tag $arg_tag;\n\
             push_stream_last_event_id $arg_last_event_id;\n\
             push_stream_user_agent $arg_ua;\n\
             push_stream_padding_by_user_agent \"[T|t]est 1,1024,512:[T|t]est 2,4097,0\";\n\
             if ($arg_store) {{\n\
               push_stream_store_messages on;\n\
             }}\n\
           }}\n\
         }}"
    );
    // The C module's 36 directives (push_stream_amqp_*, push_stream_metrics,
    // push_stream_max_channels_per_request, push_stream_max_pending_bytes and
    // push_stream_detached_subscribers are this module's own).
    let names: Vec<String> = command_table_names()
        .into_iter()
        .filter(|n| {
            !n.starts_with("push_stream_amqp_")
                && n != "push_stream_metrics"
                && n != "push_stream_max_channels_per_request"
                && n != "push_stream_max_pending_bytes"
                && n != "push_stream_detached_subscribers"
        })
        .collect();
    assert_eq!(names.len(), 36, "the command table: {names:?}");
    for n in &names {
        assert!(
            body.contains(&format!("{n} ")) || body.contains(&format!("{n};")),
            "{n} is missing from the configuration"
        );
    }
    accepts(&body);
    let n = Nginx::start(&body);
    assert_eq!(get(n.port, "/stats").status, 200);
    n.stop();
}

#[test]
fn amqp_directives_are_checked_without_connecting() {
    let loc = "server { listen 127.0.0.1:1; location /p { push_stream_publisher; push_stream_channels_path $arg_id; } }";
    let with = |amqp: &str| format!("push_stream_shared_memory_size 1m;\n{amqp}\n{loc}");
    for (amqp, needle, marker) in [
        ("push_stream_amqp_url ftp://h/; # marker", "push stream module: invalid push_stream_amqp_url: \"ftp://h/\" is not an amqp:// or amqps:// URL", "# marker"),
        ("push_stream_amqp_url amqp://u:secret@:5672/; # marker", "has no host", "# marker"),
        ("push_stream_amqp_url amqp://h:0/; # marker", "has an invalid port", "# marker"),
        ("push_stream_amqp_url file:/nonexistent/amqp-url; # marker", "push stream module: cannot read push_stream_amqp_url file", "# marker"),
        ("push_stream_amqp_prefetch 0; # marker", "push stream module: push_stream_amqp_prefetch cannot be zero.", "# marker"),
        ("push_stream_amqp_prefetch 70000; # marker", "push stream module: push_stream_amqp_prefetch cannot be more than 65535.", "# marker"),
        ("push_stream_amqp_stream_max_age 7days; # marker", "push stream module: invalid value for push_stream_amqp_stream_max_age", "# marker"),
        ("push_stream_amqp_confirm_timeout 0; # marker", "push stream module: push_stream_amqp_confirm_timeout cannot be zero.", "# marker"),
        ("push_stream_amqp_publish maybe; # marker", "push_stream_amqp_publish", "# marker"),
        ("push_stream_amqp_consumer all; # marker", "push stream module: invalid value for push_stream_amqp_consumer: \"all\" (worker: every worker consumes the stream; host: one worker consumes it for the host)", "# marker"),
        ("push_stream_amqp_exchange x; # marker", "invalid number of arguments in \"push_stream_amqp_exchange\"", "# marker"),
        ("push_stream_amqp_exchange x headers; # marker", "push stream module: invalid push_stream_amqp_exchange: headers exchanges are not supported", "# marker"),
        ("push_stream_amqp_exchange x match; # marker", "push stream module: invalid push_stream_amqp_exchange: unknown exchange type \"match\" (direct, fanout or topic)", "# marker"),
        ("push_stream_amqp_exchange x direct; # marker", "push stream module: invalid push_stream_amqp_exchange: a direct exchange needs at least one binding key", "# marker"),
        ("push_stream_amqp_exchange x fanout k; # marker", "push stream module: invalid push_stream_amqp_exchange: a fanout exchange takes no binding keys", "# marker"),
    ] {
        assert_rejects("", &with(amqp), needle, marker);
    }
    // Checked together once the http block is read (reported at its end, as the C module's
    // checks of that kind).
    for (amqp, needle) in [
        ("push_stream_amqp_url amqp://h/;", "push stream module: push_stream_amqp_url needs a source: push_stream_amqp_stream or push_stream_amqp_exchange."),
        ("push_stream_amqp_stream s;", "push stream module: push_stream_amqp_stream needs push_stream_amqp_url."),
        ("push_stream_amqp_exchange x topic;", "push stream module: push_stream_amqp_exchange needs push_stream_amqp_url."),
        ("push_stream_amqp_prefetch 10;", "push stream module: push_stream_amqp_* directives need push_stream_amqp_url and a source (push_stream_amqp_stream or push_stream_amqp_exchange)."),
        ("push_stream_amqp_url amqp://h/;\npush_stream_amqp_stream s;\npush_stream_amqp_exchange x topic;", "push stream module: push_stream_amqp_stream and push_stream_amqp_exchange cannot be used together: choose one source."),
        ("push_stream_amqp_url amqp://h/;\npush_stream_amqp_exchange x topic;\npush_stream_amqp_stream_max_age 7D;", "push stream module: push_stream_amqp_stream_max_age and push_stream_amqp_stream_max_bytes need push_stream_amqp_stream (they are a stream's retention)."),
        ("push_stream_amqp_url amqp://h/;\npush_stream_amqp_exchange x topic;\npush_stream_amqp_consumer host;", "push stream module: push_stream_amqp_consumer host needs push_stream_amqp_stream: with push_stream_amqp_exchange every worker consumes its own queue."),
        ("push_stream_amqp_consumer host;", "push stream module: push_stream_amqp_* directives need push_stream_amqp_url and a source (push_stream_amqp_stream or push_stream_amqp_exchange)."),
    ] {
        let prefix = temp_prefix("nginx-t");
        let (ok, stderr, _) = nginx_t(&full_config(&prefix, 1, "", &with(amqp), 1));
        assert!(!ok && stderr.contains(needle), "{amqp}: {stderr}");
    }
    // The password never appears in messages.
    let prefix = temp_prefix("nginx-t");
    let (_, stderr, _) = nginx_t(&full_config(
        &prefix,
        1,
        "",
        &with("push_stream_amqp_url amqp://u:hunter2@h:0/;"),
        1,
    ));
    assert!(!stderr.contains("hunter2"), "{stderr}");
    // A valid configuration passes nginx -t without any broker (nothing connects at -t).
    let prefix = temp_prefix("nginx-t");
    let (ok, stderr, _) = nginx_t(&full_config(&prefix, 1, "", &with("push_stream_amqp_url amqp://u:p@203.0.113.1:5672/%2f;\npush_stream_amqp_stream s;\npush_stream_amqp_stream_max_age 7D;\npush_stream_amqp_stream_max_bytes 1g;\npush_stream_amqp_consumer host;"), 1));
    assert!(ok, "{stderr}");
    let prefix = temp_prefix("nginx-t");
    let (ok, stderr, _) = nginx_t(&full_config(&prefix, 1, "", &with("push_stream_amqp_url amqp://u:p@203.0.113.1:5672/%2f;\npush_stream_amqp_exchange realtime topic news.* \"#\";\npush_stream_amqp_publish on;"), 1));
    assert!(ok, "{stderr}");
}
