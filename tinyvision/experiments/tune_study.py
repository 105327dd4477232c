"""The Optuna study of a tuning run: where it is stored (Optuna's journal file, safe for several
processes, or a database URL such as postgresql://... that several machines share), creating or
re-opening it, and which of its trials count towards the total."""
from __future__ import annotations

import importlib.util
import json
import os
import socket
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..errors import DataError, TinyVisionError
from ..files import one_line
from .tune_spec import TuneSpec


def open_storage(url: str) -> Any:
    """A journal file path -> JournalStorage; a database URL -> RDBStorage."""
    import optuna

    if "://" not in url:
        from ..runs import make_dirs

        if Path(url).is_dir():
            raise TinyVisionError(f"--storage {url}: is a folder; give a journal file, e.g. {Path(url) / 'study.journal'}")
        make_dirs(Path(url).parent)
        try:
            return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(url))
        except (OSError, ValueError, KeyError, TypeError) as exc:  # damaged, or not a journal file
            raise DataError(f"{url}: not an Optuna journal file that can be read ({type(exc).__name__}: "
                            f"{one_line(exc)})") from None
    import sqlalchemy.exc

    try:  # heartbeats let a later worker fail the trials of a worker that died
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(_with_driver(url), engine_kwargs={"pool_pre_ping": True},
                                              heartbeat_interval=30, grace_period=180)
    except ImportError as exc:
        hint = " (pip install 'tinyvision[postgres]')" if url.startswith("postgres") else ""
        raise TinyVisionError(f"storage {storage_label(url)} needs a database driver: {exc.__cause__ or exc}{hint}") from None
    except sqlalchemy.exc.SQLAlchemyError as exc:
        first = str(exc.orig if getattr(exc, "orig", None) else exc).strip().splitlines()[0]
        raise TinyVisionError(f"cannot open the study storage {storage_label(url)}: {first}") from None


def _with_driver(url: str) -> str:
    """SQLAlchemy 2.1 reads postgresql:// as psycopg 3: name psycopg2 when only it is installed."""
    scheme, _, rest = url.partition("://")
    if scheme in ("postgresql", "postgres") and importlib.util.find_spec("psycopg") is None \
            and importlib.util.find_spec("psycopg2") is not None:
        return f"postgresql+psycopg2://{rest}"
    return url


def storage_label(url: str) -> str:
    """The storage as it may be printed and saved: no password."""
    if "://" not in url:
        return url
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@contextmanager
def optuna_errors_only() -> Iterator[None]:
    """Optuna's own log lines off (we print one line per trial); errors still show."""
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def open_study(spec: TuneSpec, study_name: str, storage: Any) -> Any:
    """Create or re-open the study; refuse one made from a different tune file. Trials left
    running by a worker of this host that is gone are marked failed."""
    import optuna

    study = optuna.create_study(storage=storage, study_name=study_name, direction="minimize",
                                load_if_exists=True)
    saved = study.user_attrs.get("tinyvision_tune")
    if saved is None:
        study.set_user_attr("tinyvision_tune", spec.record())
    elif saved != json.loads(json.dumps(spec.record())):
        raise TinyVisionError(f"study {study_name!r} was made from a different tune file; "
                              "choose another --study-name")
    fail_abandoned_trials(study)
    return study


def fail_abandoned_trials(study: Any) -> list[int]:
    """Mark FAIL the RUNNING trials whose worker process, on this host, is gone (killed with its
    pool): they would read "running" for good. Trials of other hosts, or of live processes, are left."""
    import optuna

    host, abandoned = socket.gethostname(), []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        pid = t.user_attrs.get("pid")
        if t.user_attrs.get("host") == host and isinstance(pid, int) and not _process_alive(pid):
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            abandoned.append(t.number)
    return abandoned


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        pass
    return True


def counts(t: Any) -> bool:
    """Whether a trial counts towards the total: finished, or failed for a reason of its own (not
    interrupted, nor lost with a worker that died); those are replaced when the study runs again."""
    return t.state.name in ("COMPLETE", "PRUNED") or (
        t.state.name == "FAIL" and t.user_attrs.get("status") in ("failed", "diverged"))
