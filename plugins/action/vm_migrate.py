# -*- coding: utf-8 -*-
# Copyright: Ferry Developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""ferry.hypervisor.vm_migrate on the controller: the move spans two hosts.

Run against the source. Reads both hosts' facts (vm_info, host_info), settles idempotence
(the VM already on ``to`` and not here is ``ok``), runs the pre-flight (check mode stops
there), then prepares the receiver on ``to`` through that host's own connection, moves the
VM from here, and verifies it runs on ``to`` and nowhere else.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import secrets
import threading

from ansible.errors import AnsibleError
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from ansible_collections.ferry.hypervisor.plugins.module_utils.common import argument_spec
from ansible_collections.ferry.hypervisor.plugins.module_utils.migrate import (
    MOVE_OPTIONS, MOVE_REQUIRED_IF, TLS_OPTIONS, bad_ssh_option, preflight, ssh_settings)
from ansible_collections.ferry.hypervisor.plugins.plugin_utils.remote import RemoteHost

display = Display()
MODULE = 'ferry.hypervisor.vm_migrate'
PROGRESS_INTERVAL = 2.0  # seconds between two looks at a running move
ENGINE = ('state_dir', 'engine_venv')
SPEC = argument_spec(**MOVE_OPTIONS)


class MigrationFailed(Exception):
    """One line for the task's ``msg``; ``result`` keeps what was learnt before it."""

    def __init__(self, message, **result):
        super(MigrationFailed, self).__init__(message)
        self.result = result


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = True

    def run(self, tmp=None, task_vars=None):
        result = super(ActionModule, self).run(tmp, task_vars)
        validation = ArgumentSpecValidator(SPEC, required_if=MOVE_REQUIRED_IF).validate(self._task.args)
        if validation.error_messages:
            return dict(result, failed=True, msg=validation.error_messages[0])
        params = validation.validated_parameters
        refusal = bad_ssh_option(params['ssh_options'])
        if refusal:
            return dict(result, failed=True, msg=refusal)
        destination = None
        try:
            destination = RemoteHost(self, params['to'], task_vars)
            result.update(self._move(params, destination, task_vars))
        except (MigrationFailed, AnsibleError) as err:
            result.update(getattr(err, 'result', {}), failed=True, msg=str(err).splitlines()[0])
        finally:
            if destination is not None:
                destination.close()
        return result

    # --- the steps ---

    def _move(self, params, destination, task_vars):
        name, to, here = params['name'], params['to'], task_vars['inventory_hostname']
        if to == here:
            raise MigrationFailed('to: %s is the host the task runs on; run it against the source' % to)
        engine = dict((key, params[key]) for key in ENGINE if params[key] is not None)
        on_source = self._vm(self._here('ferry.hypervisor.vm_info', dict(engine, snapshots=False), task_vars), name)
        on_target = self._vm(self._facts(destination, 'ferry.hypervisor.vm_info', dict(engine, snapshots=False)), name)
        diff = {'before': {'host': to if on_target and not on_source else here}, 'after': {'host': to}}
        if on_target is not None and on_source is None:
            return {'changed': False, 'moved': False, 'vm': on_target, 'diff': diff}
        if on_source is None:
            raise MigrationFailed('name: no VM named %r on %s or %s' % (name, here, to))
        if on_target is not None:
            raise MigrationFailed('name: VM %r is defined on both %s and %s; remove the copy that should not be there'
                                  % (name, here, to))
        check = preflight(on_source, self._here('ferry.hypervisor.host_info', engine, task_vars)['host'],
                          self._facts(destination, 'ferry.hypervisor.host_info', engine)['host'], (here, to))
        for warning in check['warnings']:
            display.warning('%s: %s' % (name, warning))
        if check['blockers']:
            raise MigrationFailed('; '.join(check['blockers']), preflight=check, moved=False)
        if self._task.check_mode:
            return {'changed': True, 'moved': False, 'preflight': check, 'diff': diff}
        report = self._transfer(params, engine, destination, task_vars)
        arrived = self._verify(name, here, to, engine, destination, task_vars, report)
        return {'changed': True, 'moved': True, 'preflight': check, 'report': report, 'vm': arrived, 'diff': diff}

    def _transfer(self, params, engine, destination, task_vars):
        token = secrets.token_hex(32)  # one move, one secret; it never leaves the two module runs
        move = dict((key, params[key]) for key in ('name', 'to', 'mode', 'max_downtime', 'timeout', 'bandwidth',
                                                   'transport', 'port') + TLS_OPTIONS)
        move.update(engine, token=token)
        display.display('%s: preparing the receiver on %s' % (params['name'], params['to']))
        port = self._facts(destination, MODULE, dict(move, step='receive'))['receiver']['port']
        address = params['address'] or destination.variables['ansible_host']
        display.display('%s: moving to %s (%s:%d, %s)' % (params['name'], params['to'], address, port, params['mode']))
        send = dict(move, step='send', address=address, port=port)
        if params['transport'] == 'ssh':
            send.update(ssh_settings(params, destination.variables))
        watch = Progress(RemoteHost(self, task_vars['inventory_hostname'], task_vars), params['name'], engine)
        watch.start()
        try:
            sent = self._here(MODULE, send, task_vars)
        finally:
            watch.stop()
        return sent['report']

    def _verify(self, name, here, to, engine, destination, task_vars, report):
        """Exactly one copy: on ``to``, running as the report says, and not on the source."""
        on_target = self._vm(self._facts(destination, 'ferry.hypervisor.vm_info', dict(engine, snapshots=False)), name)
        on_source = self._vm(self._here('ferry.hypervisor.vm_info', dict(engine, snapshots=False), task_vars), name)
        if on_target is None or on_source is not None:
            raise MigrationFailed('the engine reported %s, but VM %r is %s on %s and %s on %s'
                                  % (report.get('outcome'), name, state_of(on_source), here, state_of(on_target), to),
                                  report=report)
        return on_target

    # --- running modules here and there ---

    def _here(self, module, args, task_vars):
        return self._checked(self._execute_module(module_name=module, module_args=args, task_vars=task_vars),
                             task_vars['inventory_hostname'])

    def _facts(self, host, module, args):
        return self._checked(host.run(module, args), host.host)

    @staticmethod
    def _checked(result, host):
        if result.get('failed') or result.get('unreachable'):
            raise MigrationFailed('%s: %s' % (host, result.get('msg') or 'failed'))
        return result

    @staticmethod
    def _vm(info, name):
        for vm in info.get('vms', []):
            if vm.get('name') == name:
                return vm
        return None


class Progress(threading.Thread):
    """While the move runs, a line every few seconds on the controller (phase, round, bytes,
    rate, ETA), read from the source's engine over a connection of its own: a move of minutes
    is not one silent wait."""

    def __init__(self, source, name, engine):
        super(Progress, self).__init__(name='ferry-migration-progress')
        self.daemon = True
        self.source, self.vm, self.engine = source, name, engine
        self.stopped = threading.Event()

    def run(self):
        try:
            while not self.stopped.wait(PROGRESS_INTERVAL):
                info = self.source.run('ferry.hypervisor.vm_info', dict(self.engine, name=[self.vm], snapshots=False))
                progress = (info.get('vms') or [{}])[0].get('migration')
                if progress and not self.stopped.is_set():
                    display.display(progress_line(self.vm, progress))
        except Exception as err:  # pylint: disable=broad-except
            display.vvv('%s: no more progress lines: %s' % (self.vm, err))  # the move itself goes on

    def stop(self):
        self.stopped.set()
        self.join(30)
        self.source.close()


def progress_line(name, progress):
    total = progress.get('bytes_total') or 0
    sent = progress.get('bytes_sent') or 0
    share = '%3.0f%%' % (100.0 * sent / total) if total else '   ?'
    eta = progress.get('eta_s')
    return ('%s: %s round %s, %s of %.0f MiB, %.0f MiB/s, throttle %.0f%%%s'
            % (name, progress.get('phase', '?'), progress.get('round', 0), share, total / 2.0 ** 20,
               (progress.get('rate') or 0) / 2.0 ** 20, 100 * (progress.get('throttle') or 0),
               ', ETA %.0f s' % eta if isinstance(eta, (int, float)) else ''))


def state_of(vm):
    return 'absent' if vm is None else vm.get('state')
