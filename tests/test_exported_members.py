"""The public API is exactly what `sopkit.__all__` lists; everything else is private."""

from __future__ import annotations

import inspect
import pkgutil

import sopkit

PUBLIC = {
    "Action", "ChainError", "ClockError", "CustomerView", "DispatchStats", "Dispatcher",
    "Observation",
    "EventError", "LoadedPlaybook", "Location", "NotFound", "Outbox", "OutboxRow",
    "PlaybookError", "Problem", "ReportData", "Runtime", "Scheduled", "SopkitError",
    "StateConflict", "render_report", "write_report",
    "StateError", "StateExport", "Summary", "Upgrade", "UsageError", "__version__",
    "compile_playbook", "load_playbook", "open_store", "simulate", "upgrade",
}

# The embedding API of Runtime (docs/embedding.md): a change here is a change of contract.
RUNTIME_API = {
    "add_profile", "advance", "cancel", "consent_screen", "customer_ids", "now",
    "deliverable", "due", "evict", "export", "export_changed", "export_clock", "ingest", "load",
    "load_clock", "message", "observe", "outbox_rows", "pending", "state",
}


def test_all_is_pinned() -> None:
    """Adding or removing a public name is a deliberate change to this list."""
    assert set(sopkit.__all__) == PUBLIC


def test_no_stray_public_names() -> None:
    """Every public name in the package namespace is in __all__ (as httpx checks), but the
    two public subpackages."""
    public = {name for name in vars(sopkit) if not name.startswith("_")}
    # `clv` appears once something imported it (it needs the optional numpy and scipy)
    assert public - set(sopkit.__all__) - {"clv"} == {"channels", "engines"}


def test_every_exported_name_exists() -> None:
    """Each name in __all__ can be imported from sopkit."""
    for name in sopkit.__all__:
        assert hasattr(sopkit, name), name


def test_every_exported_error_is_a_sopkit_error() -> None:
    """A host can catch everything sopkit raises on purpose with `except SopkitError`."""
    errors = [getattr(sopkit, n) for n in sopkit.__all__
              if inspect.isclass(getattr(sopkit, n))
              and issubclass(getattr(sopkit, n), BaseException)]
    assert len(errors) == 9 and all(issubclass(e, sopkit.SopkitError) for e in errors)


def test_the_embedding_api_of_runtime_is_pinned() -> None:
    """The Runtime methods docs/embedding.md documents exist, each with a docstring."""
    for name in RUNTIME_API:
        member = inspect.getattr_static(sopkit.Runtime, name)
        assert (getattr(member, "__doc__", None) or "").strip(), name


def test_modules_are_private() -> None:
    """Implementation modules start with an underscore; only `engines`, `channels` and `clv`
    are public."""
    names = {m.name for m in pkgutil.iter_modules(sopkit.__path__)}
    assert {n for n in names if not n.startswith("_")} == {"channels", "clv", "engines"}


def test_the_clv_module_is_pinned() -> None:
    """`sopkit.clv` exports exactly the names docs/analytics.md documents, each importable."""
    import sopkit.clv

    documented = {
        "RFM", "UNIT_DAYS", "BGNBDFit", "BGNBDParams", "BadPurchase", "ClvReport",
        "GammaGammaFit", "GammaGammaParams", "Outlook", "Purchase", "PurchaseLog", "analyse",
        "bgnbd_log_likelihood", "clv", "customer_rfm", "expected_purchases",
        "expected_purchases_new", "expected_spend", "fit_bgnbd", "fit_gamma_gamma",
        "gamma_gamma_log_likelihood", "outlook", "p_alive", "p_no_purchase", "read_purchases",
        "simulate_bgnbd", "summarize"}
    assert set(sopkit.clv.__all__) == documented
    public = {n for n in vars(sopkit.clv) if not n.startswith("_")}
    assert public == documented and all(hasattr(sopkit.clv, n) for n in documented)


def test_only_the_durable_engine_module_imports_durable() -> None:
    """`durable` is imported by sopkit/engines/durable.py and nowhere else in sopkit."""
    from pathlib import Path

    root = Path(sopkit.__file__).parent
    importers = sorted(
        str(p.relative_to(root)) for p in root.rglob("*.py")
        if any(line.strip().startswith(("import durable", "from durable"))
               for line in p.read_text(encoding="utf-8").splitlines())
    )
    assert importers == ["engines/durable.py"]


CHANNELS_PUBLIC = {
    "GROUP", "BatchSender", "Channel", "ChannelConfigError", "ChannelFactory", "CheckableFactory",
    "Closable", "GroupSender", "MemoryChannel", "Message", "MockChannel", "PluginInfo", "Receipt",
    "SendOutcome", "SendResults", "SmsChannel", "SmtpChannel", "TagMirror", "TransferOutcome",
    "TransferResults", "WebhookChannel", "WebhookVerificationError", "WecomChannel",
    "WecomError", "build", "check_settings", "did_you_mean", "env_secret", "installed",
    "key_from_message_id", "mask_text", "verify_signature",
}


def test_channels_all_is_pinned() -> None:
    """What a channel author imports from sopkit.channels is a deliberate list."""
    import sopkit.channels

    assert set(sopkit.channels.__all__) == CHANNELS_PUBLIC


def test_channels_has_no_stray_public_names() -> None:
    """Every public name in sopkit.channels' namespace is in its __all__, and each resolves."""
    import sopkit.channels

    for name in sopkit.channels.__all__:
        assert getattr(sopkit.channels, name) is not None, name
    public = {name for name in vars(sopkit.channels) if not name.startswith("_")}
    assert public == CHANNELS_PUBLIC
    assert set(dir(sopkit.channels)) >= CHANNELS_PUBLIC


def test_channels_errors_are_sopkit_errors() -> None:
    """The errors sopkit.channels exports can be caught with `except SopkitError`."""
    import sopkit.channels as c

    assert all(issubclass(e, sopkit.SopkitError)
               for e in (c.ChannelConfigError, c.WecomError, c.WebhookVerificationError))


def test_importing_channels_does_not_import_httpx() -> None:
    """`import sopkit.channels` stays cheap: the HTTP channels load on first use."""
    import subprocess
    import sys

    code = ("import sys, sopkit.channels as c; a = 'httpx' in sys.modules; c.WecomChannel; "
            "print(a, 'httpx' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "True"]
