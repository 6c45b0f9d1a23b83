"""The operator's probes (issue 17): each way a batch, an alert or a model's trust was lost,
grouped as the issue reported them, with the test that now shows it holds. docs/reliability.md
lists them; this file keeps the two in step, and every test named here must exist.

    python tests/test_reliability_probes.py    # rewrite the table in docs/reliability.md
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "reliability.md"
START, END = "<!-- probes:start -->", "<!-- probes:end -->"

# (heading, what an operator hit, the test that holds it: file::function[case])
PROBES: list[tuple[str, str, str]] = [
    (
        "Batches lost or stuck",
        "a full disk set a batch aside until --force; it is now retried, to a dead letter",
        "tests/unit/test_ledger_and_alerts.py::test_a_transient_failure_is_retried_until_the_dead_letter",
    ),
    (
        "Batches lost or stuck",
        "the outbox full for one run, with room for the next: scored once, no --force",
        "tests/flows/test_crash_recovery.py::test_a_full_outbox_fails_the_run_and_the_next_run_scores_the_batch_once",
    ),
    (
        "Batches lost or stuck",
        "a rewrite keeping size and mtime (cp -p, rsync -t) kept its old identity",
        "tests/unit/test_ledger_and_alerts.py::test_a_rewrite_that_keeps_size_and_mtime_gets_a_new_identity",
    ),
    (
        "Batches lost or stuck",
        "a stale claim whose pid was reused stayed busy for ever",
        "tests/unit/test_ledger_and_alerts.py::test_a_claim_whose_pid_was_reused_is_taken_over",
    ),
    (
        "Batches lost or stuck",
        "files the inbox does not take were ignored without a word; symlinks were followed",
        "tests/unit/test_ledger_and_alerts.py::test_inbox_reports_symlinks_and_foreign_files_and_follows_neither",
    ),
    (
        "Batches lost or stuck",
        "a lost ledger re-scored everything and re-sent every alert",
        "tests/flows/test_flow_logic.py::test_a_lost_ledger_is_refused_then_rebuilt_from_the_outbox",
    ),
    (
        "Batches lost or stuck",
        "a corrupted ledger gave a raw sqlite3.DatabaseError",
        "tests/flows/test_flow_logic.py::test_a_damaged_ledger_is_one_clear_error",
    ),
    (
        "Batches lost or stuck",
        "scores renamed into place with no fsync, while the ledger's commit was durable",
        "tests/unit/test_atomic.py::test_the_file_and_its_folder_reach_the_disk_before_the_write_returns",
    ),
    (
        "Alerts lost or blocked",
        "a device clock at 2099 suppressed its machine's alerts until 2099",
        "tests/unit/test_ledger_and_alerts.py::test_a_clock_that_ran_ahead_does_not_silence_an_entity",
    ),
    (
        "Alerts lost or blocked",
        "that 2099 stayed in the cooldown state",
        "tests/unit/test_ledger_and_alerts.py::test_an_alarm_from_a_clock_running_ahead_is_raised_but_not_kept_for_cooldown",
    ),
    (
        "Alerts lost or blocked",
        "aware and naive times raised a TypeError in the alert step",
        "tests/unit/test_ledger_and_alerts.py::test_zoned_and_naive_times_compare_without_a_type_error",
    ),
    (
        "Alerts lost or blocked",
        "a batch failing in its alert step aborted every later run (a poison batch)",
        "tests/flows/test_flow_logic.py::test_a_batch_that_fails_at_its_alert_does_not_hold_up_the_others",
    ),
    (
        "Alerts lost or blocked",
        "inf under missing = 'impute' was scored as the median, as normal",
        "tests/test_runtime.py::test_an_overflowed_reading_scores_as_extreme_under_impute",
    ),
    (
        "Alerts lost or blocked",
        "a NaN time moved its row to the end of its series",
        "tests/test_bad_input.py::test_bad_input[nan-time]",
    ),
    (
        "Alerts lost or blocked",
        "a model exported by VAEDetector.export made every alert critical",
        "tests/test_detector.py::test_exported_detector_alerts_at_the_severity_its_scores_warrant",
    ),
    (
        "Alerts lost or blocked",
        "a manifest without its validation quantiles was accepted",
        "tests/test_export.py::test_a_model_without_its_validation_quantiles_is_refused",
    ),
    (
        "The model folder is verified",
        "a manifest `version` of ../../escaped wrote outside the output folder",
        "tests/test_tampering.py::test_manifest_edited_out_of_shape",
    ),
    (
        "The model folder is verified",
        "a threshold edited in the manifest, which its graphs do not carry",
        "tests/test_tampering.py::test_manifest_threshold_that_its_graphs_do_not_carry_is_refused",
    ),
    (
        "The model folder is verified",
        "a graph's weights as external data, read from an unverified file",
        "tests/test_tampering.py::test_a_graph_with_external_weights_is_refused_even_when_rehashed",
    ),
    (
        "The model folder is verified",
        "VAEDetector.export(name='../../x') wrote outside its root",
        "tests/test_detector.py::test_export_name_is_a_name_not_a_path",
    ),
    (
        "The model folder is verified",
        "a manifest number of 5,001 digits gave a traceback",
        "tests/test_tampering.py::test_manifest_with_a_number_too_long_to_read",
    ),
    (
        "Secrets and exposure",
        "a failed webhook logged its full URL, token and all",
        "tests/unit/test_ledger_and_alerts.py::test_webhook_urls_are_cut_to_their_host_in_delivery_errors",
    ),
    (
        "Secrets and exposure",
        "the local Dask cluster's dashboard listened on every interface",
        "tests/flows/test_dask_partitions.py::test_local_cluster_listens_on_loopback_only",
    ),
    (
        "Secrets and exposure",
        "a symlink planted at a predictable .NAME.tmp was followed and its target overwritten",
        "tests/unit/test_atomic.py::test_a_symlink_planted_at_the_old_temporary_name_is_never_followed",
    ),
    (
        "Output safety and errors",
        "--output equal to the input replaced the data with its scores",
        "tests/test_runtime.py::test_output_that_is_one_of_the_inputs_is_refused_before_anything_is_written",
    ),
    (
        "Output safety and errors",
        "a full disk gave a traceback, not one error line",
        "tests/test_cli.py::test_environment_errors_are_one_line_too",
    ),
    (
        "Output safety and errors",
        "--chunk-rows 0 and sample -n 0 gave a traceback and a SIGFPE",
        "tests/test_cli.py::test_counts_below_one_are_usage_errors_not_crashes",
    ),
    (
        "Output safety and errors",
        "an id column past 2^63 crashed the write",
        "tests/test_bad_input.py::test_bad_input[id-past-64-bits]",
    ),
    (
        "Output safety and errors",
        "20 KB of Parquet decoded to 1 M sensor rows with no cap",
        "tests/test_runtime.py::test_a_batch_over_the_row_cap_is_refused_before_it_is_decoded",
    ),
    # The third round (issue 33), by the review's ids; the rest of that round is still open.
    (
        "Third round",
        "N07: a manifest's resample of 0 made polars panic, past every error handler",
        "tests/test_reliability_round3.py::test_n07_a_zero_resample_is_refused_in_config_and_manifest_alike",
    ),
    (
        "Third round",
        "N12: alert rules that could never fire (20 of 10 rows, an infinite cooldown) were accepted",
        "tests/test_reliability_round3.py::test_n12_alert_rules_that_can_never_fire_are_refused_when_given",
    ),
    (
        "Third round",
        "N18: a torn decisions.jsonl line broke `vad versions` for good",
        "tests/test_reliability_round3.py::test_n18_a_torn_decision_line_is_skipped_and_not_copied_on",
    ),
    (
        "Third round",
        "N19: an empty version folder hid every version from `vad versions`",
        "tests/test_reliability_round3.py::test_n19_an_empty_version_folder_does_not_hide_the_others",
    ),
    (
        "Third round",
        "N22: a killed retrain left copies of the recent data in the model folder for ever",
        "tests/test_reliability_round3.py::test_n22_a_killed_retrain_leaves_no_copy_of_the_recent_data",
    ),
    (
        "Third round",
        "N38: a batch that killed its process was retried by every run, and the batches after it never ran",
        "tests/flows/test_crash_recovery.py::test_n38_a_batch_that_kills_every_run_is_set_aside_and_the_others_are_scored",
    ),
    (
        "Third round",
        "N37: SQLite's own lock error at the alert step set the batch aside until --force",
        "tests/test_reliability_round3.py::test_n37_a_ledger_lock_held_at_the_alert_step_is_retried_not_set_aside",
    ),
    (
        "Third round",
        "N37: a real full disk under the ledger (SQLite's error, not an OSError) did the same",
        "tests/test_reliability_round3.py::test_n37_a_ledger_disk_that_fills_at_the_alert_step_is_retried_not_set_aside",
    ),
    (
        "Third round",
        "P22a/N41: a ledger truncated to 0 bytes re-scored and re-alerted everything",
        "tests/flows/test_flow_logic.py::test_p22a_n41_a_ledger_truncated_to_nothing_is_refused_like_a_lost_one",
    ),
    (
        "Third round",
        "N24: each killed run of a fleet file left a full copy of the batch beside its output",
        "tests/test_fleets.py::test_n24_a_killed_fleet_run_leaves_no_copy_of_its_batch_behind",
    ),
    (
        "Third round",
        "N43: the fixed 10 M-row default let a 180 KB file take 2.3 GB, an OOM kill on a small host",
        "tests/test_runtime.py::test_n43_the_default_row_cap_is_what_the_memory_available_holds",
    ),
    (
        "Third round",
        "N33: a sink added later was paged with every alert ever recorded",
        "tests/unit/test_ledger_and_alerts.py::test_n33_a_new_sink_receives_alerts_from_now_on_unless_backfilled",
    ),
    (
        "Third round",
        "N34: an alert recorded by the previous release failed every run before it scored",
        "tests/unit/test_ledger_and_alerts.py::test_n34_an_alert_recorded_by_an_older_release_is_still_delivered",
    ),
    (
        "Third round",
        "N35: a hanging sink's error gave no reason",
        "tests/unit/test_ledger_and_alerts.py::test_n35_a_sink_that_times_out_says_so",
    ),
    (
        "Third round",
        "N36: a dead sink was retried for every pending alert before any batch was scored",
        "tests/flows/test_crash_recovery.py::test_n33_n36_a_failing_sink_is_tried_once_per_run_and_a_new_sink_starts_from_now",
    ),
    (
        "Third round",
        "N40: a host clock behind the data turned the cooldown off, so every batch paged again",
        "tests/unit/test_ledger_and_alerts.py::test_n40_a_host_clock_behind_the_data_keeps_the_cooldown_and_says_so",
    ),
    (
        "Third round",
        "N11: a machine that stayed drifted raised a drift alert on every batch",
        "tests/flows/test_flow_logic.py::test_n11_one_drift_alert_per_drift_episode",
    ),
    (
        "Third round",
        "N15, N21: a refitted threshold went live at once, over whatever `latest` had become",
        "tests/test_reliability_round3.py::test_n15_n21_a_refitted_threshold_goes_live_only_when_asked_and_only_over_what_it_started_from",
    ),
    (
        "Third round",
        "N13: a persistence no data could meet wrote a version that never flags",
        "tests/test_reliability_round3.py::test_n13_a_persistence_longer_than_the_data_is_refused",
    ),
    (
        "Third round",
        "N20, N21: a renamed model folder's challenger went elsewhere; promotion overwrote a newer latest",
        "tests/test_reliability_round3.py::test_n20_n21_a_challenger_lands_beside_its_champion_and_never_overwrites_a_newer_latest",
    ),
    (
        "Third round",
        "N32: a model folder replaced mid-run gave one output from two models, nothing naming them",
        "tests/flows/test_dask_partitions.py::test_n32_partitions_scored_by_two_model_versions_are_never_combined",
    ),
    (
        "Third round",
        "N03-N06: persistence, percentiles, drift reference, resample, lineage edited with no error",
        "tests/test_tampering.py::test_n03_n06_any_edit_that_changes_a_flag_or_a_record_is_refused",
    ),
    (
        "Third round",
        "N01: a manifest naming another version than its folder collided with that version",
        "tests/test_tampering.py::test_n01_a_manifest_that_names_another_version_than_its_folder_is_refused",
    ),
    (
        "Third round",
        "N42: a glob inbox followed a linked sub-folder, and the ledger kept a secret's header",
        "tests/unit/test_ledger_and_alerts.py::test_n42_a_glob_inbox_does_not_follow_a_linked_folder",
    ),
    (
        "Third round",
        "P05: a file sharing no column with the model had its first line (a secret) quoted",
        "tests/unit/test_ledger_and_alerts.py::test_p05_a_file_that_shares_no_column_with_the_model_is_not_quoted",
    ),
    (
        "Third round",
        "N29, N30: a file re-delivered after planning mixed old and new rows, or lost a machine, silently",
        "tests/flows/test_dask_partitions.py::test_n29_n30_a_file_redelivered_after_planning_is_refused_not_mixed",
    ),
    (
        "Third round",
        "P12: every run claimed each done file again (2,000 files: 22 s)",
        "tests/unit/test_ledger_and_alerts.py::test_p12_finished_batches_are_known_in_one_query",
    ),
    (
        "Third round",
        "P12: nothing archived done files, so every run listed and hashed them all again",
        "tests/flows/test_flow_logic.py::test_p12_scored_files_move_to_the_archive_and_later_runs_find_none",
    ),
    (
        "Third round",
        "P33: the Node example ignored the persistence rule and took any manifest threshold",
        "tests/test_node.py::test_p33_a_persistence_rule_flags_the_same_rows_in_node",
    ),
    (
        "Third round",
        "N46: a claim in the previous release's token format on a reused pid was busy for ever",
        "tests/unit/test_ledger_and_alerts.py::test_n46_an_old_format_claim_on_a_live_pid_is_left_to_the_lease",
    ),
    (
        "Third round",
        "P14b: a column named twice past the first MiB of a CSV header went unseen",
        "tests/test_bad_input.py::test_p14b_a_duplicate_column_past_the_first_mebibyte_of_the_header_is_found",
    ),
    (
        "Third round",
        "N27: a fleet file re-delivered between its count and its split gave polars' traceback",
        "tests/test_fleets.py::test_n27_a_fleet_file_redelivered_between_its_count_and_its_split_is_one_clear_error",
    ),
    (
        "Third round",
        "N08, N09: drift on machines unseen in training, or with few rows, reported nothing at all",
        "tests/test_drift.py::test_n08_n09_unknown_or_short_machines_are_named_and_judged_by_the_fleet",
    ),
    (
        "Third round",
        "N36: a dead sink cost every run its timeouts and retries (the circuit breaker)",
        "tests/unit/test_ledger_and_alerts.py::test_n36_a_failing_sink_is_paused_longer_with_each_failure_and_closes_on_success",
    ),
    (
        "Fourth round",
        "R22: a stream in 12-row batches per machine lost 831 of its 894 flags: no window crossed a batch",
        "tests/test_streams.py::test_R22_a_stream_in_batches_of_12_rows_per_machine_flags_what_it_flags_whole",
    ),
    (
        "Fourth round",
        "R24: a series shorter than its window passed a 1e300 reading (score 4e8) as normal",
        "tests/test_streams.py::test_R24_a_series_shorter_than_its_window_still_flags_a_reading_that_breaks_the_scale",
    ),
    (
        "Fourth round",
        "R28: a retried batch scored after its successor changed the successor's alarms (5 + 4, not 5 + 2)",
        "tests/test_streams.py::test_R28_batches_finished_out_of_order_are_scored_in_data_time",
    ),
    (
        "Fourth round",
        "R47: one batch from a device clock 73 years ahead turned an entity's cooldown off for good",
        "tests/test_streams.py::test_R47_a_batch_from_a_clock_73_years_ahead_pins_neither_cooldown_nor_stream",
    ),
    (
        "Fourth round",
        "R01: `vad promote a ../b/1` (or `1/`) wrote `latest` as given; every later scoring run failed",
        "tests/test_reliability_round4.py::test_R01_promote_refuses_anything_but_a_version_number_of_the_folder",
    ),
    (
        "Fourth round",
        "R02: a half-copied version (its manifest alone) was promoted with exit 0",
        "tests/test_reliability_round4.py::test_R02_promote_refuses_a_half_copied_version",
    ),
    (
        "Fourth round",
        "R41: a version folder linking to another model's version was promoted",
        "tests/test_reliability_round4.py::test_R41_promote_refuses_a_version_that_links_to_another_models_folder",
    ),
    (
        "Fourth round",
        "R08: a batch rewritten to the same size and time was archived as the bytes scored",
        "tests/test_reliability_round4.py::test_R08_a_batch_rewritten_to_the_same_size_and_time_is_not_archived_as_scored",
    ),
    (
        "Fourth round",
        "R09: a planted link under the batch's archive name was taken for its copy; the batch was lost",
        "tests/test_reliability_round4.py::test_R09_a_planted_link_or_other_file_under_the_batchs_name_is_never_taken_for_its_copy",
    ),
    (
        "Fourth round",
        "R13: a sink registered while the host clock ran 2 h ahead was owed none of the next alerts",
        "tests/test_reliability_round4.py::test_R13_a_sink_registered_while_the_clock_ran_ahead_is_owed_the_alerts_after_it",
    ),
    (
        "Fourth round",
        "R15: a failure recorded with the clock a day ahead paused its sink for a day",
        "tests/test_reliability_round4.py::test_R15_a_failure_recorded_with_the_clock_a_day_ahead_pauses_no_longer_than_asked",
    ),
    (
        "Fourth round",
        "R21b: `student_df` 1e9 trained for minutes, then failed the export's parity check",
        "tests/test_reliability_round4.py::test_R21b_degrees_of_freedom_the_exported_graph_cannot_hold_are_refused_before_training",
    ),
    (
        "Fourth round",
        "R18: httpx's own INFO line quoted a webhook's URL whole, its password and token included",
        "tests/test_reliability_round4.py::test_R18_httpx_request_lines_carry_no_webhook_secret",
    ),
    (
        "Fourth round",
        "R05: `vad release b.csv` also released other folders' and another model's batches",
        "tests/test_reliability_round4.py::test_R05_release_takes_only_the_batch_named_and_refuses_a_name_that_several_share",
    ),
    (
        "Fourth round",
        "R11: a batch another run had archived was reported as changed since it was scored",
        "tests/test_reliability_round4.py::test_R11_a_batch_another_run_archived_is_said_to_be_gone_not_changed",
    ),
    (
        "Fourth round",
        "R30: a killed writer's temporary stayed until the same output name was written again",
        "tests/test_reliability_round4.py::test_R30_a_killed_writers_temporary_goes_when_any_output_is_written_beside_it",
    ),
    (
        "Fourth round",
        "R38: a column named twice in an Arrow file gave a polars panic, in NDJSON a type error",
        "tests/test_reliability_round4.py::test_R38_a_column_named_twice_in_arrow_or_ndjson_is_named_in_one_line",
    ),
    (
        "Fourth round",
        "N7: serving a mistyped model started, then failed every tick with a traceback",
        "tests/test_reliability_round4.py::test_N7_serving_refuses_a_missing_model_or_inbox_before_it_starts",
    ),
    (
        "Fourth round",
        "R12: a webhook that refused one alert (400) kept every later alert to it undelivered",
        "tests/test_reliability_round4.py::test_R12_an_alert_a_sink_refuses_is_dead_lettered_and_holds_no_other_back",
    ),
    (
        "Fourth round",
        "N10: a version promoted with files still in the inbox re-scored them and paged both incidents again",
        "tests/test_reliability_round4.py::test_N10_a_promoted_version_scores_the_inbox_again_without_paging_again",
    ),
    (
        "Fourth round",
        "N8: `vad train` flags were kept nowhere reusable; retraining needed a TOML repeating them",
        "tests/test_reliability_round4.py::test_N8_train_like_a_model_keeps_every_option_it_was_trained_with",
    ),
    (
        "Fourth round",
        "N8: a bad recent value was reported in a temporary file the user never made",
        "tests/test_reliability_round4.py::test_N8_retraining_names_the_users_file_and_row_never_a_temporary",
    ),
    (
        "Fourth round",
        "N8: the retrain flow ignored the champion's `duplicates` and `missing` policies",
        "tests/flows/test_retrain_flow.py::test_a_champion_trained_with_data_policies_is_retrained_with_them_and_no_toml",
    ),
    (
        "Fourth round",
        "N9: absolute rules promoted a challenger with 2.9x the champion's false alarms",
        "tests/test_reliability_round4.py::test_N9_a_challenger_with_more_false_alarms_than_the_champion_is_not_promoted_by_default",
    ),
    (
        "Fourth round",
        "N37 (re-run): the ledger's real disk filling at today's alert step",
        "tests/test_reliability_round4.py::test_N37_the_ledgers_disk_filling_for_real_at_the_alert_step_leaves_the_batch_to_the_next_run",
    ),
    (
        "Fourth round",
        "Soak: a promotion gave a poison batch a fresh budget, and it killed five more scoring runs",
        "tests/test_reliability_round4.py::test_N10_a_promotion_gives_a_poison_batch_no_fresh_budget",
    ),
]


def render_table() -> str:
    lines = ["| # | heading | what an operator hit | test |", "|---:|---|---|---|"]
    lines += [
        f"| {i} | {heading} | {what} | `{test.split('::', 1)[1]}` ({test.split('::')[0]}) |"
        for i, (heading, what, test) in enumerate(PROBES, 1)
    ]
    return "\n".join(lines)


def defined_tests(path: Path) -> set[str]:
    return {
        node.name
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    }


def bad_input_cases() -> set[str]:
    """The catalogue's case ids, from `@case("id", ...)` in tests/test_bad_input.py."""
    tree = ast.parse((ROOT / "tests" / "test_bad_input.py").read_text())
    return {
        d.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef)
        for d in node.decorator_list
        if isinstance(d, ast.Call) and getattr(d.func, "id", "") == "case"
    }


def test_every_probe_names_a_test_that_exists() -> None:
    for _, what, test in PROBES:
        path, name = test.split("::")
        function, _, case = name.partition("[")
        assert function in defined_tests(ROOT / path), f"{what}: {test} does not exist"
        if case and path.endswith("test_bad_input.py"):
            assert case.rstrip("]") in bad_input_cases(), f"{what}: no bad-input case {case.rstrip(']')}"
    assert len({test for _, _, test in PROBES}) == len(PROBES) >= 28


def test_the_docs_list_the_probes_as_they_are_here() -> None:
    text = DOCS.read_text()
    current = text.split(START, 1)[1].split(END, 1)[0].strip()
    assert current == render_table(), f"docs/reliability.md is stale: run `python {Path(__file__).relative_to(ROOT)}`"


if __name__ == "__main__":
    text = DOCS.read_text()
    head, rest = text.split(START, 1)
    DOCS.write_text(f"{head}{START}\n{render_table()}\n{END}{rest.split(END, 1)[1]}")
    print(f"wrote {len(PROBES)} probes to {DOCS.relative_to(ROOT)}")
    sys.exit(0)
