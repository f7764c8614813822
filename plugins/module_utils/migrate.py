# -*- coding: utf-8 -*-
# Copyright: Ferry Developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The two ends of a migration as the ferry.hypervisor.vm_migrate action plugin drives them:
on the destination, a receiver waiting for the VM; on the source, the move itself. Both
hold the one-time token the controller made in a private file only while the engine reads
it, and both only run the engine's command.

``preflight`` is the controller's: from the two hosts' facts, what would block the move
(with both numbers) and what it is likely to cost.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import re
import tempfile

from ansible_collections.ferry.hypervisor.plugins.module_utils.engine import EngineError

# The move's options, shared by the action plugin (which validates a task's arguments with them)
# and the module; the module adds the two the action plugin sets on each end (step, token).
MOVE_OPTIONS = dict(
    name=dict(type='str', required=True),
    to=dict(type='str', required=True),
    mode=dict(type='str', default='live', choices=['live', 'warm', 'cold']),
    max_downtime=dict(type='float', default=300),
    timeout=dict(type='float', default=3600),
    bandwidth=dict(type='str'),
    transport=dict(type='str', default='tcp', choices=['tcp', 'tls', 'ssh']),
    port=dict(type='int', default=7400),
    address=dict(type='str'),
    ssh_user=dict(type='str'),
    ssh_port=dict(type='int'),
    ssh_config=dict(type='str'),
    ssh_options=dict(type='list', elements='str'),
    tls_cert=dict(type='path'),
    tls_key=dict(type='path'),
    tls_ca=dict(type='path'),
)
# transport=tls needs all three: each end proves itself with its certificate and checks the other's.
TLS_OPTIONS = ('tls_cert', 'tls_key', 'tls_ca')
MOVE_REQUIRED_IF = [('transport', 'tls', TLS_OPTIONS)]

# An ssh_config keyword, ``=``, and a value on one line (the engine's ``--ssh-option`` rule).
SSH_OPTION = re.compile(r'^[A-Za-z][A-Za-z0-9]*=[^\x00-\x1f\x7f]+$')

# Ports the receiver tries, from ``port`` up: a VM that just arrived keeps its port for a minute
# (to answer a source in doubt), so the next move into that host takes the next port.
PORT_TRIES = 16
PORT_IN_USE = 'Address already in use'

# Memory the destination keeps free beside the VM (the engine's receiver refuses below it too).
MEMORY_MARGIN_MIB = 64
# What the estimate assumes a first pass moves per second: a conservative share of a 10 Gbit/s link.
ESTIMATE_MIB_PER_S = 400.0


class TokenFile(object):
    """The token in a file of mode 0600 for as long as the ``with`` block lasts."""

    def __init__(self, token):
        self.token = token
        self.path = None

    def __enter__(self):
        handle, self.path = tempfile.mkstemp(prefix='ferry-migration-', suffix='.token')
        try:
            os.write(handle, self.token.encode('ascii'))
        finally:
            os.close(handle)
        return self.path

    def __exit__(self, *failure):
        try:
            os.unlink(self.path)
        except OSError:
            pass


def host_port(address, port):
    """``address:port``, an IPv6 address in brackets."""
    if ':' in address and not address.startswith('['):
        address = '[%s]' % address
    return '%s:%d' % (address, port)


def migrate_options(params):
    """The engine's flags for the move's own options."""
    options = ['--mode', params['mode'], '--transport', params['transport']]
    for flag, key in (('--max-downtime', 'max_downtime'), ('--timeout', 'timeout'), ('--bandwidth', 'bandwidth')):
        if params.get(key) is not None:
            options += [flag, str(params[key])]
    if params['transport'] == 'ssh':
        options += ssh_flags(params)
    return options + tls_flags(params)


def tls_flags(params):
    """``--tls-*``, the same on both ends: each host's own certificate and key (at the same paths
    on every host) and the CA both chain to, so the receiver admits only a source it can verify
    and the source sends only to a receiver it can verify."""
    if params['transport'] != 'tls':
        return []
    return ['--%s=%s' % (key.replace('_', '-'), params[key]) for key in TLS_OPTIONS]


def ssh_flags(params):
    """``--ssh-*`` for what the task or the inventory set; the rest is left to ssh's config on
    the source. FLAG=VALUE, so that a value beginning with ``-`` is not taken for a flag."""
    flags = []
    for flag, key in (('--ssh-user', 'ssh_user'), ('--ssh-port', 'ssh_port'), ('--ssh-config', 'ssh_config')):
        if params.get(key) is not None:
            flags.append('%s=%s' % (flag, params[key]))
    return flags + ['--ssh-option=%s' % option for option in params.get('ssh_options') or []]


def ssh_settings(params, variables):
    """The source's ssh settings for the move: user and port are the task's, else those the
    controller uses for ``to`` (its ``ansible_user`` and ``ansible_port``), else None (the
    source's ssh config decides)."""
    return {'ssh_user': params.get('ssh_user') or variables.get('ansible_user'),
            'ssh_port': params.get('ssh_port') or variables.get('ansible_port'),
            'ssh_config': params.get('ssh_config'), 'ssh_options': params.get('ssh_options')}


def bad_ssh_option(options):
    """The one-line refusal of the first of ``options`` that is not KEY=VALUE, or None."""
    for option in options or []:
        if not SSH_OPTION.match(option):
            return 'ssh_options: %r is not KEY=VALUE (an ssh_config keyword, then a value on one line)' % option
    return None


def listen_host(transport):
    """Over ssh the source arrives through the destination's sshd, from its loopback: nothing
    else needs to reach the receiver. Otherwise it listens on every address."""
    return '127.0.0.1' if transport == 'ssh' else '::'


class MigrationEnd(object):
    """One end of the move, by ``params['step']``: ``receive`` on the destination, ``send`` on the source."""

    def __init__(self, engine, params, check_mode=False):
        self.engine = engine
        self.params = params
        self.check_mode = check_mode
        self.done = []

    def apply(self):
        p = self.params
        if self.check_mode:
            # The action plugin answers check mode itself (its pre-flight); this end never moves then.
            return {'changed': True}
        if not p.get('token'):
            raise EngineError('token: the one-time token is made by the vm_migrate action plugin; '
                              'run ferry.hypervisor.vm_migrate as a task, not its module alone')
        with TokenFile(p['token']) as token_file:
            if p['step'] == 'receive':
                # The receiver has read the token once it listens, so the file may go.
                waiting = self.receive(token_file)
                self.done.append('receive')
                return {'changed': True, 'receiver': waiting}
            report = self.engine.migrate(p['name'], host_port(p['address'], p['port']), token_file,
                                         migrate_options(p))
        self.done.append('send')
        return {'changed': True, 'report': report}

    def receive(self, token_file):
        """Start the receiver on the first free port of PORT_TRIES from ``port``; its answer says which."""
        p = self.params
        for port in range(p['port'], min(p['port'] + PORT_TRIES, 65536)):
            try:
                return self.engine.receive(p['name'], host_port(listen_host(p['transport']), port), token_file,
                                           receive_timeout(p['timeout']), tls_flags(p))
            except EngineError as err:
                if PORT_IN_USE not in str(err):
                    raise
        raise EngineError('port: %d to %d are all in use on this host (recent arrivals keep theirs for a minute)'
                          % (p['port'], port))


def receive_timeout(timeout):
    """The receiver waits as long as the move may take, and a minute for the source to begin."""
    return (timeout or 3600) + 60


def preflight(vm, source, destination, names):
    """What would block the move of ``vm`` (a vm_info entry) from ``source`` to ``destination``
    (host_info facts; ``names`` their inventory names), what would slow it, and an estimate of
    its time, for check mode and for the refusal of a real run."""
    blockers, warnings = [], []
    source_name, destination_name = names
    drained = destination.get('drained')
    if drained:
        blockers.append('drained: %s is drained%s and takes no arriving VM (ferry undrain there ends that)'
                        % (destination_name, ' (%s)' % drained['reason'] if drained.get('reason') else ''))
    need = vm['memory'] + MEMORY_MARGIN_MIB
    free = destination['memory_free_mib']
    if vm['state'] in ('running', 'paused') and free < need:
        blockers.append('memory: %s has %d MiB available, the VM needs %d MiB (%d MiB and a margin of %d MiB)'
                        % (destination_name, free, need, vm['memory'], MEMORY_MARGIN_MIB))
    vcpus_after = destination['committed_vcpus'] + vm['vcpus']
    if vcpus_after > destination['cpus']:
        warnings.append('vcpus: %s would run %d vCPUs on %d CPUs (overcommitted)'
                        % (destination_name, vcpus_after, destination['cpus']))
    missing = missing_cpu_features(vm, source, destination)
    if missing:
        blockers.append('cpu: %s does not offer CPU features the VM %s: %s (define it with cpu: baseline, '
                        'or the features both hosts have: the ferry.hypervisor.cpu_baseline filter)'
                        % (destination_name, 'sees on %s' % source_name if vm.get('cpu_features') else 'needs',
                           ' '.join(missing[:20])))
    vendors = source['cpu'].get('vendor'), destination['cpu'].get('vendor')
    if vendors[0] != vendors[1]:
        warnings.append("cpu: %s's CPU is %s, %s's is %s; a guest may not survive the change of vendor"
                        % (source_name, vendors[0], destination_name, vendors[1]))
    for key in ('version', 'protocol'):
        ours, theirs = source.get('engine', {}).get(key), destination.get('engine', {}).get(key)
        if ours != theirs:
            (blockers if key == 'protocol' else warnings).append(
                'engine %s: %s has %s, %s has %s' % (key, source_name, ours, destination_name, theirs))
    return {
        'blockers': blockers,
        'warnings': warnings,
        'memory': {'needed_mib': need, 'available_mib': free},
        'vcpus': {'needed': vm['vcpus'], 'committed': destination['committed_vcpus'], 'cpus': destination['cpus']},
        'missing_cpu_features': missing,
        'estimated_seconds': round(vm['memory'] / ESTIMATE_MIB_PER_S, 1),
    }


def missing_cpu_features(vm, source, destination):
    """The features the VM needs that the destination does not offer: a running VM keeps the
    CPU it sees; a stopped one boots its model afresh there (``host`` then fits any host)."""
    cpu = destination['cpu']
    if cpu.get('features') is None:  # an engine before CPU models: Linux's flags are all there is
        needs = source['cpu']['flags'] if vm.get('cpu', 'host') == 'host' else []
        return sorted(set(needs) - set(cpu['flags']))
    model = vm.get('cpu', 'host')
    if vm.get('cpu_features'):
        needs = vm['cpu_features']
    elif model == 'baseline':
        return [] if cpu.get('baseline') else ['(the baseline model)']
    else:
        needs = [] if model == 'host' else model
    return sorted(set(needs) - set(cpu['features']) - set(['hypervisor']))
