"""``sunlit-ground console``: an interactive terminal for one spacecraft.

Type a command as on the command line (``PING token=7``); Tab completes command names,
argument names and enum values from the dictionary; ``help [COMMAND]`` explains. A status
line (mode, charge, hottest zone, power mode, link, active alarms) is printed above the
prompt whenever it changes, while telemetry keeps arriving in the background; the link
reads SILENT once no packet came for a few housekeeping periods (server LOST once the connection to the
server ended: said once). History is kept in
``~/.sunlit_history``. A hazardous command asks to confirm; read from a file or a pipe, where it
cannot ask, the console does not send one (``sunlit-ground send ... --yes`` does). Ctrl-C at the
prompt ends the console; while a command is followed it stops following it, says its outcome is
unknown, and the console goes on.

Console words (lower case, so they never clash with a command):
``help [CMD]``, ``tm [NAME...]``, ``events [N]``, ``alarms``, ``ack CHANNEL``,
``limits CHANNEL [warn_high=V ...]``, ``status``, ``quit``. A ``key=value`` given twice on a line is refused.

On the server (not ``--direct``) ``limits`` reads and changes the server's limits, which its alarms,
the web console and every operator use; this console's copy follows them.
"""

from __future__ import annotations

import shlex
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, TextIO

from flight.agent.schedule import stateless_refusal
from flight.cli import parse_assignments
from flight.link.dictionary import ArgumentError, FailureCode, Limits, ValueType, date_for_seconds
from ground.alarms import AlarmManager, LimitStore
from ground.api import CommandLost, ServerError
from ground.cli_args import named, printable
from ground.client import CommandTimeout, GroundClient

WORDS = ("help", "tm", "events", "alarms", "ack", "limits", "status", "quit", "exit")
COLOURS = {"nominal": "\033[32m", "warning": "\033[33m", "critical": "\033[31m", "stale": "\033[90m",
           "missing": "\033[90m"}
RESET = "\033[0m"
HISTORY_LINES = 1000  # lines of ~/.sunlit_history kept


class Completer:
    """Readline completion from the dictionary: commands, then ``arg=``, then enum values."""

    def __init__(self, dictionary):
        self.d = dictionary
        self._matches: list[str] = []

    def candidates(self, line: str) -> list[str]:
        words = line.split(" ")
        if len(words) == 1:
            prefix = words[0]
            names = [c.name for c in self.d.commands] + list(WORDS)
            return sorted(n + " " for n in names if n.upper().startswith(prefix.upper()))
        head, current = words[0], words[-1]
        if head in ("tm", "limits", "ack"):
            return sorted(ch.name + " " for ch in self.d.channels if ch.name.startswith(current))
        if head == "help":
            return sorted(c.name + " " for c in self.d.commands if c.name.startswith(current.upper()))
        try:
            command = self.d.command(head)
        except ArgumentError:
            return []
        if "=" in current:
            key, _, value = current.partition("=")
            try:
                spec = command.arg(key).spec
            except KeyError:
                return []
            if spec.type is ValueType.ENUM:
                return [f"{key}={c} " for c in spec.choices if c.lower().startswith(value.lower())]
            if spec.type is ValueType.BOOL:
                return [f"{key}={c} " for c in ("true", "false") if c.startswith(value.lower())]
            return []
        given = {w.partition("=")[0] for w in words[1:-1]}
        return sorted(f"{a.name}=" for a in command.args if a.name.startswith(current) and a.name not in given)

    def complete(self, text: str, state: int) -> str | None:
        """The readline protocol: with " " as the only delimiter, each candidate replaces the word."""
        if state == 0:
            import readline

            self._matches = self.candidates(readline.get_line_buffer()[: readline.get_endidx()])
        return self._matches[state] if state < len(self._matches) else None


class Console:
    def __init__(self, client: GroundClient, out: TextIO = sys.stdout, colour: bool | None = None,
                 limits_path: Path | None = None, confirm: Callable[[str], bool] | None = None):
        self.client = client
        self.out = out
        self.colour = out.isatty() if colour is None else colour
        self.alarms = AlarmManager(client.dictionary, LimitStore(limits_path))
        self.alarms.attach(client)
        self.alarms.listeners.append(self._alarm_changed)
        # On the server its limits are the ones that count (found in audit: `limits` changed this console's
        # own copy alone, and said it was done): read at the start, followed as they change.
        self.on_server = getattr(client, "server_link", None) is not None
        if self.on_server:
            client.server_link.listeners.append(self._server_message)
            try:
                self._follow_limits(client.server_limits())
            except ServerError as exc:
                self.say(f"the server's limits not read ({exc}): the dictionary's shown until one changes",
                         "warning")
        self.completer = Completer(client.dictionary)
        self.confirm = confirm or self._ask
        self.on_command: list[Callable[[Any], None]] = []  # e.g. the archive's command history
        self.interactive = False
        self._shown_status = ""
        self._last_packet_s: float | None = None
        client.listeners.append(self._packet_seen)
        if self.on_server:
            self._start_from_greeting()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll_forever, daemon=True)

    def _ask(self, text: str) -> bool:
        """Yes from the operator at the terminal. Never from a file or pipe: the next line is the next
        command, not an answer (a piped PING once went as the 'no' to a hazardous command's question)."""
        if not self.interactive:
            self.say("a console reading a file or pipe cannot ask: a hazardous command is not sent from one "
                     "(sunlit-ground send NAME ... --yes sends one without asking)")
            return False
        try:
            return input(f"{text} [y/N] ").strip().lower() in ("y", "yes")
        except (EOFError, KeyboardInterrupt):  # Ctrl-C at the question: a no, as `send` takes it (found in audit:
            print(file=self.out)  # it ended the console)
            return False

    # --- background ------------------------------------------------------------------------

    def _poll_forever(self) -> None:
        next_status = 0.0
        while not self._stop.is_set():
            with self._lock:
                self.client.poll(0)
            if self.interactive and time.monotonic() >= next_status:
                next_status = time.monotonic() + 1.0
                self._refresh_status()
            self._stop.wait(0.1)

    def _packet_seen(self, item: Any) -> None:
        if item.packet is not None:
            self._last_packet_s = time.monotonic()

    def _start_from_greeting(self) -> None:
        """The values' ages, the link's silence and the agent's parameters as the server's greeting says them (found
        in a README walk-through: the first status line read "link SILENT" and `tm` showed every value stale until
        the next packets came, though the server had them fresh)."""
        try:
            state = self.client._greeting("latest", "status", "parameters")
        except ServerError:
            return  # one not as a Sunlit server sends it: values show stale until packets come
        self.alarms.observe_parameters(state["parameters"])
        now, now_mono = time.time(), time.monotonic()
        for name, snap in state["latest"].items():
            age = snap.get("age_s") if isinstance(snap, dict) else None
            if name in self.client.latest and _age(age):
                self.alarms.last_seen[name] = now - age
        silent = state["status"].get("silent_s")
        if _age(silent):
            self._last_packet_s = now_mono - silent

    def stale_after_s(self) -> float:
        """Three of the agent's housekeeping periods (as it last reported ``hk_period_s``)."""
        period = self.client.parameters.get("hk_period_s", 1.0)
        if not isinstance(period, (int, float)) or not period > 0:
            period = 1.0
        return max(3.0 * period, 2.0)

    def server_lost(self) -> str:
        """Why the connection to the server ended ("" while it stands, or on a direct link): nothing comes on it any
        more, and the status line says so, not "link SILENT" (found in audit: a server stopped mid-pass read as a
        loss of signal)."""
        return self.client.lost_reason()

    def link_silent(self) -> bool:
        """No packet for longer than values may age before they are shown stale."""
        return self._last_packet_s is None or time.monotonic() - self._last_packet_s > self.stale_after_s()

    def _refresh_status(self) -> None:
        """Print the status line above the prompt when it changed, and redraw what is being typed."""
        line = self.status_line()
        if line == self._shown_status:
            return
        if "server LOST" in line and "server LOST" not in self._shown_status:
            self.say(f"the connection to the server ended ({self.server_lost()}): nothing more comes on it; quit and "
                     "start the console again once the server is back", "critical")
        self._shown_status = line
        state = "critical" if "SILENT" in line or "ALARM" in line or "LOST" in line else None
        text = f"{COLOURS[state]}{line}{RESET}" if self.colour and state else line
        self.out.write(f"\r\033[K{text}\n")
        self.out.flush()
        try:
            import readline

            readline.redisplay()
        except (ImportError, AttributeError):
            pass

    def _alarm_changed(self, what: str, alarm: Any) -> None:
        if what in ("raised", "escalated"):
            self.say(f"ALARM {alarm.state.upper()}: {alarm.channel} = {alarm.value!r} ({what})", alarm.state)

    def say(self, text: str, state: str | None = None) -> None:
        if self.colour and state in COLOURS:
            text = f"{COLOURS[state]}{text}{RESET}"
        print(text, file=self.out, flush=True)

    # --- status line -----------------------------------------------------------------------

    def status_line(self) -> str:
        latest = self.client.latest

        def value(name: str, fmt: str = "{}") -> str:
            if name not in latest or latest[name][0] is None:
                return "?"
            return printable(fmt.format(latest[name][0]))  # the power mode is the board's text: never an escape

        link = "server LOST" if self.server_lost() else "link SILENT" if self.link_silent() else "link ok"
        active = len(self.alarms.active())
        return (f"[{value('mode')} | charge {value('battery_soc_pct', '{:.0f}')}% | "
                f"max {value('temp_max_c', '{:.0f}')}°C | {value('power_mode')} | {link}"
                + (f" | {active} ALARM{'S' if active > 1 else ''}" if active else "") + "]")

    # --- one line --------------------------------------------------------------------------

    def handle(self, line: str) -> bool:
        """Act on one input line; False when the console should end."""
        line = line.strip()
        if not line or line.startswith("#"):
            return True
        try:
            words = shlex.split(line)
        except ValueError as exc:
            self.say(f"cannot read that line: {exc}")
            return True
        head, rest = words[0], words[1:]
        if head in ("quit", "exit"):
            return False
        if head == "help":
            self.say(self._help(rest[0] if rest else None))
        elif head == "status":
            self.say(self.status_line())
        elif head == "tm":
            self._show_tm(rest)
        elif head == "events":
            last = rest[0] if rest else "10"
            if not (last.isdigit() and int(last) >= 1) or len(rest) > 1:
                self.say(f"events [N]: N, how many of the latest events to show, a whole number from 1 "
                         f"(not {' '.join(rest)!r})")
                return True
            for rec in list(self.client.events)[-int(last):]:  # the agent's text printable, as `sunlit-ground events`
                # prints it (found in audit: an escape or a line break in a file's name reached the terminal)
                self.say(f"{rec.event.severity.name:<11} {rec.event.name}: {printable(rec.text)}",
                         "warning" if "WARNING" in rec.event.severity.name else None)
        elif head == "alarms":
            active = self.alarms.active()
            if not active:
                self.say("no active alarms")
            for a in active:
                self.say(f"{a.channel}: {a.state} (value {a.value!r}, now {a.last_value!r}) "
                         f"{'acknowledged' if a.acknowledged else 'NOT acknowledged'}", a.state)
        elif head == "ack":
            if not rest:  # found in audit: said nothing
                self.say("ack what? give a channel in alarm (ack CHANNEL ...; `alarms` lists them)")
            for channel in rest:
                self._ack(channel)
        elif head == "limits":
            self._limits(rest)
        else:
            self._command(head, rest)
        return True

    def _ack(self, channel: str) -> None:
        """Through the server (archived, seen by every operator, refused to a viewer) when there
        is one; on a direct link, this console's own alarms."""
        api = getattr(self.client, "api", None)
        try:
            if api is not None:
                answer = api.post("/api/alarms/ack", {"spacecraft": self.client.spacecraft, "channel": channel})
                try:
                    self.alarms.acknowledge(channel, answer.get("acknowledged_by") or "server")
                except KeyError:
                    pass  # the server knew an alarm this console had not seen yet
                self.say(f"{channel}: acknowledged" + (" and cleared" if answer.get("status") == "cleared" else ""))
                return
            a = self.alarms.acknowledge(channel, "console")
            self.say(f"{channel}: acknowledged" + (" and cleared" if a.cleared else ""))
        except KeyError as exc:
            self.say(f"ack {channel}: {exc.args[0] if exc.args else exc}")
        except ServerError as exc:
            self.say(f"not acknowledged: {exc}", "critical")

    def _help(self, name: str | None) -> str:
        d = self.client.dictionary
        if name is None:
            cmds = ", ".join(c.name for c in d.commands)
            return f"commands: {cmds}\nconsole: {', '.join(WORDS)}\n'help COMMAND' for its arguments; Tab completes."
        try:
            c = d.command(name)
        except ArgumentError as exc:
            return str(exc)
        lines = [f"{c.name} (opcode {c.opcode:#06x}){' — HAZARDOUS, asks to confirm' if c.hazardous else ''}",
                 f"  {c.description}"]
        for a in c.args:
            spec = a.spec
            rng = f" [{spec.min}, {spec.max}]" if spec.min is not None or spec.max is not None else ""
            choices = f" one of {', '.join(spec.choices)}" if spec.choices else ""
            default = f" (default {a.default})" if a.default is not None else ""
            lines.append(f"  {a.name}={spec.type.value}{rng} {spec.unit}{choices}{default}: {a.description}")
        return "\n".join(lines)

    def _show_tm(self, names: list[str]) -> None:
        with self._lock:
            self.client.poll(0)
        wanted = names or [ch.name for ch in self.client.dictionary.channels]
        for name in wanted:
            ch = self.client.dictionary.channel_by_name.get(name)
            if ch is None:
                self.say(f"no channel {name}")
                continue
            if name not in self.client.latest:
                if names:
                    self.say(f"{name:>24} = (none yet)", "stale")
                continue
            value, _t = self.client.latest[name]
            self.alarms.stale_s = self.stale_after_s()
            state = "stale" if self.alarms.stale(name) else self.alarms.state(name, value)
            shown = f"{value:.3f}" if isinstance(value, float) else repr(value) if isinstance(value, str) else str(value)
            self.say(f"{name:>24} = {shown} {ch.unit} [{state}]", state)

    def _follow_limits(self, limits: Any) -> None:
        """Limits as the server applies them, ``{channel: {bound: value}}``, taken as this console's own."""
        if not isinstance(limits, dict):
            return
        for channel, bounds in limits.items():
            if channel in self.client.dictionary.channel_by_name and isinstance(bounds, dict):
                try:
                    self.alarms.limit_store.overrides[channel] = Limits(**{k: float(v) for k, v in bounds.items()})
                except (TypeError, ValueError):
                    continue  # a newer server's bound this console does not know: the dictionary's stand

    def _server_message(self, item: dict[str, Any]) -> None:
        """A push from the server (its reader thread): limits that changed, by an operator or a parameter."""
        if item.get("kind") == "limits" and item.get("spacecraft") == getattr(self.client, "spacecraft", None):
            self._follow_limits(item.get("limits"))

    def _limits(self, rest: list[str]) -> None:
        if not rest:
            self.say("limits CHANNEL [warn_low=V warn_high=V crit_low=V crit_high=V]")
            return
        channel = rest[0]
        where = " (on the server)" if self.on_server else ""
        try:
            if len(rest) > 1:
                bounds = {k: _bound(k, v) for k, v in parse_assignments(rest[1:]).items()}
                if self.on_server:  # the server's, for everyone: said done only once the server applied it
                    self._follow_limits({channel: self.client.set_limits(channel, bounds)})
                    where = " set on the server"
                    limits = self.alarms.limits(channel)
                else:
                    limits = self.alarms.set_limits(channel, **bounds)
            else:
                limits = self.alarms.limits(channel)
        except KeyError as exc:
            self.say(f"limits {channel}: {exc.args[0] if exc.args else exc}")
            return
        except (TypeError, ValueError) as exc:
            self.say(f"limits {channel}: {exc}")
            return
        except ServerError as exc:  # one whose answer was lost or not understood may be applied (found in audit)
            self.say(f"limits {channel}: {'maybe changed' if exc.maybe_taken else 'not changed'}: {exc}", "critical")
            return
        self.say(f"{channel} limits{where}: {limits.to_json() or 'none'}")

    def _command(self, head: str, rest: list[str]) -> None:
        d = self.client.dictionary
        try:
            command = d.command(head)
            assignments = parse_assignments(rest)
            args = command.validate_args(assignments)
        except ArgumentError as exc:  # a date for a time in seconds: said as its number, as `sunlit-ground send` does
            hint = date_for_seconds(command, assignments) if exc.code is not FailureCode.UNKNOWN_COMMAND else ""
            self.say(f"not sent: {exc}{hint}")
            return
        except ValueError as exc:
            self.say(f"not sent: {exc}")
            return
        refused = stateless_refusal(d, command.name, args)  # found in audit: sent, to fail on board
        if refused is not None:
            self.say(f"not sent: {command.name} {refused.field}: {refused.reason}")
            return
        if command.hazardous and not self.confirm(f"{command.name} is hazardous ({command.description}) — send?"):
            self.say("not sent")
            return
        follow: dict[str, Any] = {}
        if getattr(self.client, "api", None):  # said once the server has it (found in audit: "queued on the server"
            taken: list[bool] = []  # came first, then the server's refusal: "not queued")

            def queued(entry: dict[str, Any]) -> None:
                if not taken:
                    taken.append(True)
                    self.say(f"{command.name} queued on the server")

            follow["on_entry"] = queued
        else:
            self.say(f"{command.name} sent")
        try:
            with self._lock:
                result = self.client.send(command.name, args, on_report=lambda r: self.say(
                    f"  {command.name}: {r.stage.value}" if r.success
                    else f"  {command.name}: FAILED at {r.stage.value}: {r.code.name} {r.reason}",
                    None if r.success else "critical"), **follow)
        except CommandTimeout as exc:
            self.say(f"  {named(command.name, exc)}", "critical")
            return
        except CommandLost as exc:  # queued, then the connection ended: never "not queued" (found in audit)
            self.say(f"  {named(command.name, exc)}", "critical")
            return
        except KeyboardInterrupt:  # as it is followed: said, and the console goes on (found in audit: it ended,
            self.say(f"  interrupted: {command.name} may have been sent; its outcome is unknown (`events`, and "
                     "`sunlit-ground queue`, before sending it again)", "critical")  # saying nothing of the command)
            return
        except ServerError as exc:  # refused by the server (a viewer, a closed connection): the console goes on
            self.say(f"  {command.name}: not queued: {exc}", "critical")
            return
        for hook in self.on_command:
            hook(result)
        if result.refused:
            self.say(f"  {command.name}: {result.refused}", "critical")
        if result.result:
            self.say(f"  result: {result.result}")

    # --- the loop ------------------------------------------------------------------------

    def run(self, inp: TextIO = sys.stdin) -> None:
        interactive = self.interactive = inp.isatty()
        if interactive:
            import readline

            history = Path.home() / ".sunlit_history"
            # Bounded: written whole at each exit, it grew by each session's lines for good (found in audit)
            readline.set_history_length(HISTORY_LINES)
            try:
                readline.read_history_file(history)
            except OSError:
                pass
            readline.set_completer_delims(" ")
            readline.set_completer(self.completer.complete)
            readline.parse_and_bind("tab: complete")
        self._poller.start()
        try:
            while True:
                try:
                    line = input("sunlit> ") if interactive else inp.readline()
                except EOFError:
                    break
                if not interactive and not line:
                    break
                if not self.handle(line):
                    break
        except KeyboardInterrupt:
            pass
        finally:
            self._stop.set()
            self._poller.join(1)
            if interactive:
                try:
                    readline.write_history_file(history)
                except OSError:
                    pass


def _bound(key: str, text: str) -> float | None:
    """A limit typed at the console: a number, or none (or nothing) to clear it."""
    if text in ("", "none"):
        return None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{key}={text!r} is not a number (or none, to clear it)") from None


def _age(value: Any) -> bool:
    """A number of seconds since, as the greeting says one (never a bool, NaN or a negative)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < float("inf")
