# -*- coding: utf-8 -*-
# Copyright: Ferry Developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The Ferry engine as seen from a module running on the managed host.

Modules talk to the engine only through its command, ``<engine_venv>/bin/ferry --json``,
the engine's documented interface: nothing of the engine is imported into the Python
that runs the module, which may well be another Python version than the engine's own.
Every engine failure reaches modules as one ``EngineError`` with the engine's one-line
message and the ``kind`` the engine gave it.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os

DEFAULT_VENV = '/opt/ferry/venv'
ENGINE_ROLE = 'ferry.hypervisor.engine'
ENGINE_MISSING = ('the Ferry engine is not installed on this host (no {command}): '
                  'run the ' + ENGINE_ROLE + ' role')
ENGINE_BROKEN = ('the Ferry engine on this host does not work ({command} exited {rc}: {detail}): '
                 'run the ' + ENGINE_ROLE + ' role to reinstall it')
NOT_INSTALLED_YET = ('the Ferry engine is not installed here yet; assuming the ' + ENGINE_ROLE +
                     ' role installs it (the VM definition was not checked by the engine)')
# What the engine's --json errors say went wrong (see its README).
NOT_FOUND = 'not-found'


class EngineError(Exception):
    """A failure explained in one line: the engine's message, or a refusal naming the parameter."""

    def __init__(self, message, kind='error'):
        super(EngineError, self).__init__(message)
        self.kind = kind


class EngineMissing(EngineError):
    """No engine command where the engine role puts it."""

    def __init__(self, message):
        super(EngineMissing, self).__init__(message, 'engine-missing')


def ferry_command(venv=None):
    return os.path.join(venv or DEFAULT_VENV, 'bin', 'ferry')


def last_line(text):
    lines = [line.strip() for line in (text or '').splitlines() if line.strip()]
    return lines[-1] if lines else ''


class Engine(object):
    """One host's VMs through ``ferry --json``, run with ``module.run_command``."""

    warning = None  # nothing to warn about: the engine itself answers

    def __init__(self, module, state_dir=None, venv=None):
        self.module = module
        self.command = ferry_command(venv)
        self.state_dir = state_dir
        if not os.access(self.command, os.X_OK):
            raise EngineMissing(ENGINE_MISSING.format(command=self.command))

    def run(self, command, options=(), name=None, data=None, more=(), streams=False):
        """The one JSON document ``ferry --json command options -- name more...`` prints, or
        EngineError. ``more``: positional arguments after the name (a snapshot id). A command
        that ``streams`` JSON lines (``migrate``) answers with its last line, the report."""
        for field, value in [('name', name), ('state_dir', self.state_dir)] + [('snapshot', v) for v in more]:
            if value is not None and '\0' in value:
                # No command line can carry it: refused here, as the engine would refuse it.
                raise EngineError('%s: %r contains a NUL character' % (field, value[:80]))
        argv = [self.command, '--json', command] + list(options)
        if self.state_dir:
            argv += ['--state-dir', self.state_dir]
        if name is not None:
            # After "--" a name that looks like an option is still refused as a name.
            argv += ['--', name] + list(more)
        rc, out, err = self.module.run_command(argv, data=data)
        if rc != 0:
            raise self.failure(rc, err)
        try:
            return json.loads(last_line(out) if streams else out)
        except ValueError:
            raise EngineError(ENGINE_BROKEN.format(command=self.command, rc=rc,
                                                   detail='no JSON on its output: %r' % last_line(out)[:80]))

    def failure(self, rc, err):
        """The engine's own error (its last stderr line is one JSON object), else what it printed."""
        try:
            report = json.loads(last_line(err))
            return EngineError(str(report['error']), str(report.get('kind', 'error')))
        except (ValueError, KeyError, TypeError):
            # Not the engine speaking: a broken install (a traceback) or a command line it refused.
            detail = last_line(err)[:200] or 'no message'
            return EngineError(ENGINE_BROKEN.format(command=self.command, rc=rc, detail=detail))

    def validate(self, values):
        """The definition the engine would store for ``values`` (a dict), writing nothing."""
        return self.run('define', ['--check', '-'], data=json.dumps(values))

    def get(self, name):
        """The VM as ``ferry status`` describes it, or None when it is not defined."""
        try:
            return self.run('status', name=name)
        except EngineError as err:
            if err.kind == NOT_FOUND:
                return None
            raise

    def define(self, values):
        return self.run('define', ['--replace', '-'], data=json.dumps(values))

    def start(self, name):
        return self.run('start', name=name)

    def stop(self, name, timeout):
        # stop_timeout is documented as "then power off": the module always forces.
        return self.run('stop', ['--timeout', str(timeout), '--force'], name=name)

    def poweroff(self, name, timeout):
        return self.run('poweroff', ['--timeout', str(timeout)], name=name)

    def pause(self, name):
        return self.run('pause', name=name)

    def resume(self, name):
        return self.run('resume', name=name)

    def undefine(self, name):
        # state=absent is documented to remove the VM's folder, snapshots included.
        return self.run('undefine', ['--with-snapshots'], name=name)

    # --- snapshots ---

    def snapshots(self, name):
        """The VM's snapshots, oldest first, as ``ferry snapshot list`` describes them."""
        return self.run('snapshot', ['list'], name=name)

    def create_snapshot(self, name, snapshot, tags, live, compress):
        options = ['create']
        if snapshot is not None:
            options += ['--snapshot', snapshot]
        for tag in tags:
            options += ['--tag', tag]
        options += [] if live else ['--stop-the-world']
        options += ['--compress'] if compress else []
        return self.run('snapshot', options, name=name)

    def delete_snapshot(self, name, snapshot):
        return self.run('snapshot', ['delete'], name=name, more=[snapshot])

    def restore(self, name, snapshot, as_name=None, replace=False):
        options = (['--as', as_name] if as_name is not None else []) + (['--replace'] if replace else [])
        return self.run('restore', options, name=name, more=[snapshot])

    def receive(self, name, listen, token_file, timeout, extra=()):
        """Start a receiver for ``name`` and return once it listens (``extra``: more flags)."""
        options = ['--listen', listen, '--token-file', token_file, '--timeout', str(timeout), '--detach']
        return self.run('receive', options + list(extra), name=name)

    def migrate(self, name, to, token_file, options):
        """Move ``name`` to the receiver at ``to``; the engine's report (``options``: more flags)."""
        return self.run('migrate', ['--to', to, '--token-file', token_file] + list(options), name=name, streams=True)

    def host_info(self):
        return self.run('host-info')

    def list_vms(self):
        return self.run('list')


class NotInstalledYet(object):
    """Stands in for the engine in check mode on a host the engine role has not reached yet:
    no VM is defined there, and a definition is taken as given (the engine cannot check it)."""

    warning = NOT_INSTALLED_YET

    def validate(self, values):
        cpu = values.get('cpu') or 'host'
        return dict(values, initrd=values.get('initrd'), cmdline=values.get('cmdline') or '',
                    cpu=sorted(set(cpu)) if isinstance(cpu, list) else cpu, tags=sorted(set(values.get('tags') or [])))

    def get(self, name):
        return None

    def snapshots(self, name):
        return []
