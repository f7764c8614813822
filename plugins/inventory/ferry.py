# -*- coding: utf-8 -*-
# Copyright: Ferry Developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
name: ferry
short_description: The Ferry virtual machines of hypervisor hosts, as inventory hosts
version_added: 0.1.0
description:
  - Asks the Ferry engine of each hypervisor host for its VMs (C(ferry --json list)) over SSH,
    with the operator's own SSH setup (the system C(ssh), so C(~/.ssh/config), the agent and
    jump hosts apply, plus the host's inventory connection variables), and adds every VM as an
    inventory host with C(ferry_*) variables.
  - The hypervisors are listed in O(hosts), or taken from the inventory group
    O(hosts_from_group), or both.
  - Hypervisors are asked in parallel (O(max_workers)), each call bounded by O(timeout). A host
    that does not answer (SSH error, timeout, no engine, an answer that is not the engine's
    JSON) is reported in one warning line naming it and the reason, and skipped; the VMs of the
    others still come.
  - Each VM gets the variables C(ferry_host) (the hypervisor's name), C(ferry_state),
    C(ferry_vcpus), C(ferry_memory), C(ferry_pid), C(ferry_uptime) and one C(ferry_<key>) for
    every other field the engine gives for the VM (C(ferry_kernel), C(ferry_cmdline),
    C(ferry_error), C(ferry_started_at), C(ferry_boot_count), C(ferry_restored_from),
    C(ferry_migration), ...), C(ferry_snapshots) and C(ferry_last_snapshot_age) (with
    O(snapshots)) and C(ferry_duplicates).
  - With O(default_groups), every VM is in the groups C(ferry_vms), C(ferry_host_<hypervisor>)
    and C(ferry_state_<state>), any character not allowed in a group name replaced by C(_).
  - A VM name on more than one hypervisor (a stopped leftover after a move, a copy restored
    elsewhere) becomes one inventory host. A running copy wins over a paused one, a paused one
    over any other state, and between equals the hypervisor listed first; a warning names the
    hypervisors, and the winner's C(ferry_duplicates) lists the others.
  - No connection is set for the VMs (the engine gives no address for them); set
    C(ansible_connection), C(ansible_host) or others with O(compose), or act on a VM from its
    hypervisor with C(delegate_to) C({{ ferry_host }}).
  - Connection variables are those the inventory holds when this source is parsed (the host and
    group variables of the sources parsed before this one and, with O(use_vars_plugins), the
    C(host_vars/) and C(group_vars/) files).
author:
  - Ferry Developers (@ferry)
options:
  plugin:
    description: The name of this plugin; the source file's name must end in C(.ferry.yml) or C(.ferry.yaml).
    type: str
    required: true
    choices: [ferry.hypervisor.ferry]
  hosts:
    description:
      - Hypervisor hosts to ask, each a host name (as C(ssh) takes it, so a C(Host) entry of the
        SSH configuration works) or a dictionary with C(name) and any of the connection variables
        C(ansible_host), C(ansible_port), C(ansible_user), C(ansible_ssh_private_key_file),
        C(ansible_ssh_common_args), C(ansible_ssh_extra_args), C(ansible_ssh_executable),
        C(ansible_connection) (C(ssh) or C(local)), C(ansible_become), C(ansible_become_user),
        C(ansible_become_method) (C(sudo) only), and the engine role's C(engine_venv) and
        C(engine_state_dir).
      - Names are letters, digits, C(_), C(.), C(:), C(%) and C(-), starting with a letter, digit or C(_); any
        other value is refused with one line naming the entry.
    type: list
    elements: raw
    default: []
  hosts_from_group:
    description:
      - Also ask the hosts of this inventory group (its child groups' hosts too), each with its
        inventory variables, as listed in O(hosts).
      - Inventory sources are parsed in the order given, so the source that defines the group must
        come before this one (C(-i hosts.yml -i vms.ferry.yml), or a directory whose files sort so).
      - A host listed in O(hosts) too is asked once, with the values of O(hosts).
      - A host whose variables are not usable (a host name starting with C(-), a port that is not a
        number, an unsupported connection) is reported and skipped.
    type: str
  use_vars_plugins:
    description:
      - Read the hosts of O(hosts_from_group) with their variables from the vars plugins too
        (C(host_vars/) and C(group_vars/) files beside the inventory sources), which Ansible
        otherwise loads only after the inventory is complete.
    type: bool
    default: false
  engine_venv:
    description:
      - Where the P(ferry.hypervisor.engine#role) role installed the engine on the hypervisors; the
        plugin runs C(<engine_venv>/bin/ferry --json list) there.
      - A hypervisor's C(engine_venv) variable (the role's) takes precedence.
      - An absolute path on the hypervisors, used as given.
    type: str
    default: /opt/ferry/venv
  state_dir:
    description:
      - The Ferry state directory on the hypervisors. The engine's own default (C(/var/lib/ferry),
        or E(FERRY_STATE_DIR) of the SSH session) when unset.
      - A hypervisor's C(engine_state_dir) variable (the role's) takes precedence.
      - An absolute path on the hypervisors, used as given.
    type: str
  ssh_executable:
    description: The SSH client to run (a hypervisor's C(ansible_ssh_executable) takes precedence).
    type: str
    default: ssh
  ssh_config:
    description: An SSH configuration file, passed to the client as C(-F); the client's own configuration files when unset.
    type: path
  ssh_args:
    description:
      - More arguments for every SSH call, before the hypervisor's own
        C(ansible_ssh_common_args) and C(ansible_ssh_extra_args) (for C(-o) options, the first
        value given wins), for example C([-o, ControlMaster=auto, -o, ControlPersist=60s]).
      - The plugin always passes C(-o BatchMode=yes) first (nothing may prompt) and, after these,
        C(-o ConnectTimeout=) O(timeout).
    type: list
    elements: str
    default: []
  become:
    description:
      - Run the engine's command on every hypervisor with C(sudo -n) (sudo must not ask for a
        password); a hypervisor's C(ansible_become) takes precedence.
    type: bool
    default: false
  timeout:
    description: Seconds each call to a hypervisor may take, connecting included, before it is given up and the hypervisor skipped.
    type: int
    default: 30
  max_workers:
    description: How many hypervisors are asked at the same time.
    type: int
    default: 8
  snapshots:
    description:
      - Also read each VM's snapshots (C(ferry_snapshots), C(ferry_last_snapshot_age)), all of a
        hypervisor's in one more SSH call that runs C(ferry --json snapshot list) once per VM.
      - Both variables are null when false.
    type: bool
    default: false
  default_groups:
    description: Put every VM in C(ferry_vms), C(ferry_host_<hypervisor>) and C(ferry_state_<state>).
    type: bool
    default: true
extends_documentation_fragment:
  - constructed
  - inventory_cache
notes:
  - The variables describe the VMs as they were when the engines were asked (on a cache hit, when
    the cache was filled); C(ferry_uptime) and C(ferry_last_snapshot_age) are seconds at that time.
  - With the cache, a hypervisor that did not answer when the cache was filled is reported again,
    from the cache, until the cache expires or C(--flush-cache).
  - Values from the inventory that contain a template are templated with the host's variables.
seealso:
  - module: ferry.hypervisor.vm_info
  - module: ferry.hypervisor.vm
'''

EXAMPLES = r'''
# The smallest source, the VMs of two hypervisors reached as ~/.ssh/config says:
#   plugin: ferry.hypervisor.ferry
#   hosts: [hv1, hv2.example.com]

# vms.ferry.yml, used as "-i hypervisors.yml -i vms.ferry.yml": the hosts of the group
# "hypervisors" with their inventory connection variables and one more listed here, asked 20 at
# a time, with snapshots, cached for ten minutes; groups by kernel, of the VMs without a
# snapshot of the last day and of the big ones
plugin: ferry.hypervisor.ferry
hosts_from_group: hypervisors
hosts:
  - name: hv3
    ansible_host: 192.0.2.13
    ansible_user: admin
    ansible_become: true
max_workers: 20
timeout: 15
snapshots: true
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: ~/.cache/ferry-inventory
cache_timeout: 600
keyed_groups:
  - key: ferry_kernel
    prefix: kernel
groups:
  stale_backups: ferry_last_snapshot_age is none or ferry_last_snapshot_age > 86400
  big: ferry_memory >= 4096
compose:
  memory_gib: ferry_memory / 1024
  # guests that run an SSH server, each under a DNS name of its own
  ansible_host: inventory_hostname ~ '.vms.example.com'
'''

import concurrent.futures
import os
import re
import secrets
import shlex
import signal
import subprocess
import time

from ansible.errors import AnsibleParserError
from ansible.inventory.helpers import get_group_vars
from ansible.module_utils.common.text.converters import to_native, to_text
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable
from ansible.utils.display import Display
from ansible.utils.unsafe_proxy import wrap_var
from ansible.utils.vars import combine_vars

from ansible_collections.ferry.hypervisor.plugins.module_utils.engine import (
    ENGINE_MISSING, NOT_FOUND, Engine, EngineError, ferry_command, last_line)
from ansible_collections.ferry.hypervisor.plugins.module_utils.info import VmInfo

display = Display()

NAME = 'ferry.hypervisor.ferry'
CACHE_FORMAT = 1
# Host names and addresses as ssh takes them: no leading '-' (an option), no '/', no spaces.
HOST_NAME = re.compile(r'[A-Za-z0-9_][A-Za-z0-9_.:%-]{0,252}')
USER_NAME = re.compile(r'[A-Za-z0-9_][A-Za-z0-9_.@-]{0,127}')
# The engine's own rule for VM names (engine/ferry/inputs.py): an answer naming a VM otherwise
# is not the engine's, and such a name never becomes an inventory host.
VM_NAME = re.compile(r'[a-z0-9][a-z0-9_.-]{0,62}')
CONTROL = re.compile(r'[\x00-\x1f\x7f]')
ACTIVE = ('running', 'paused')
CONNECTIONS = ('ssh', 'smart', 'paramiko', 'paramiko_ssh', 'local', 'ansible.builtin.ssh',
               'ansible.builtin.local', 'ansible.builtin.paramiko_ssh')
# Variables read from a hypervisor, by what they set; the first one set wins (Ansible's aliases).
VARIABLES = (
    ('address', ('ansible_host', 'ansible_ssh_host')),
    ('port', ('ansible_port', 'ansible_ssh_port')),
    ('user', ('ansible_user', 'ansible_ssh_user')),
    ('key', ('ansible_ssh_private_key_file', 'ansible_private_key_file')),
    ('common_args', ('ansible_ssh_common_args',)),
    ('extra_args', ('ansible_ssh_extra_args',)),
    ('ssh_executable', ('ansible_ssh_executable',)),
    ('connection', ('ansible_connection',)),
    ('become', ('ansible_become',)),
    ('become_user', ('ansible_become_user',)),
    ('become_method', ('ansible_become_method',)),
    ('engine_venv', ('engine_venv',)),
    ('state_dir', ('engine_state_dir',)),
)
KNOWN_KEYS = ('name',) + tuple(name for key, names in VARIABLES for name in names)


class HostFailed(Exception):
    """A hypervisor skipped, with the one-line reason."""


class BadValue(Exception):
    """A value refused, the message naming where it came from."""


def one_line(text, limit=400):
    text = ' '.join(to_text(text, errors='surrogate_or_replace').split())
    return text if len(text) <= limit else text[:limit - 3] + '...'


def shown(value):
    return one_line(repr(value), 80)


def boolean(value, field):
    if isinstance(value, bool):
        return value
    text = to_text(value).strip().lower()
    if text in ('1', 'true', 'yes', 'on', 'y', 't'):
        return True
    if text in ('0', 'false', 'no', 'off', 'n', 'f', ''):
        return False
    raise BadValue('%s: %s is not a boolean' % (field, shown(value)))


def checked_name(value, field, pattern=HOST_NAME, what='a host name'):
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise BadValue('%s: %s is not %s (letters, digits and %s, starting with a letter, digit or _)'
                       % (field, shown(value), what, "'_ . : % -'" if pattern is HOST_NAME else "'_ . @ -'"))
    return value


def checked_path(value, field, absolute=False):
    if not isinstance(value, str) or not value or CONTROL.search(value):
        raise BadValue('%s: %s is not a path' % (field, shown(value)))
    if absolute and not value.startswith('/'):
        raise BadValue('%s: %s is not an absolute path' % (field, shown(value)))
    return value


def split_args(value, field):
    if value in (None, ''):
        return []
    if isinstance(value, (list, tuple)):
        args = [to_text(arg) for arg in value]
    else:
        try:
            args = shlex.split(to_text(value))
        except ValueError as err:
            raise BadValue('%s: %s (%s)' % (field, err, shown(value)))
    if any('\0' in arg for arg in args):
        raise BadValue('%s: contains a NUL character' % field)
    return args


def remote_command(argv):
    """One command line for the remote shell, every word quoted."""
    return ' '.join(shlex.quote(arg) for arg in argv)


class Hypervisor(object):
    """How to reach one hypervisor and its engine; built from its variables, or BadValue."""

    def __init__(self, name, variables, options, where):
        self.name = checked_name(name, where)
        found = {}
        for key, names in VARIABLES:
            for variable in names:
                if variables.get(variable) is not None:
                    found[key] = (variable, variables[variable])
                    break

        def value(key, default=None):
            return found[key][1] if key in found else default

        def field(key):
            return '%s: %s' % (where, found[key][0]) if key in found else where

        connection = to_text(value('connection', 'ssh'))
        if connection not in CONNECTIONS:
            raise BadValue('%s: the connection %s is not supported (ssh or local)' % (field('connection'), shown(connection)))
        self.local = connection.rsplit('.', 1)[-1] == 'local'
        self.address = checked_name(to_text(value('address', name)), field('address'), what='a host name or address')
        port = value('port')
        if port is not None:
            try:
                port = int(to_text(port))
            except ValueError:
                port = None
            if port is None or not 0 < port < 65536:
                raise BadValue('%s: %s is not a port number' % (field('port'), shown(value('port'))))
        self.port = port
        user = value('user')
        self.user = checked_name(to_text(user), field('user'), USER_NAME, 'a user name') if user is not None else None
        key = value('key')
        self.key = checked_path(os.path.expanduser(to_text(key)), field('key')) if key is not None else None
        executable = to_text(value('ssh_executable', options['ssh_executable']))
        self.ssh_executable = checked_path(executable, field('ssh_executable') if 'ssh_executable' in found else 'ssh_executable')
        self.ssh_args = split_args(value('common_args'), field('common_args')) + split_args(value('extra_args'), field('extra_args'))
        self.become = boolean(value('become', options['become']), field('become'))
        method = to_text(value('become_method', 'sudo'))
        if self.become and method not in ('sudo', 'ansible.builtin.sudo'):
            raise BadValue('%s: the become method %s is not supported (sudo only)' % (field('become_method'), shown(method)))
        become_user = value('become_user')
        self.become_user = (checked_name(to_text(become_user), field('become_user'), USER_NAME, 'a user name')
                            if become_user is not None else None)
        venv = checked_path(to_text(value('engine_venv', options['engine_venv'])),
                            field('engine_venv') if 'engine_venv' in found else 'engine_venv', absolute=True)
        self.command = ferry_command(venv)
        state_dir = value('state_dir', options['state_dir'])
        self.state_dir = (checked_path(to_text(state_dir), field('state_dir') if 'state_dir' in found else 'state_dir',
                                       absolute=True) if state_dir is not None else None)
        self.ssh_config = options['ssh_config']
        self.common = options['ssh_args']
        self.timeout = options['timeout']

    def argv(self, command):
        """What runs ``command`` (one line for the remote shell) on the hypervisor."""
        if self.local:
            return ['/bin/sh', '-c', command]
        argv = [self.ssh_executable, '-o', 'BatchMode=yes']
        argv += ['-F', self.ssh_config] if self.ssh_config else []
        argv += list(self.common) + list(self.ssh_args)
        argv += ['-o', 'ConnectTimeout=%d' % self.timeout]
        argv += ['-p', str(self.port)] if self.port else []
        argv += ['-l', self.user] if self.user else []
        argv += ['-i', self.key] if self.key else []
        return argv + ['--', self.address, command]

    def wrap(self, argv):
        """The engine's argv as the hypervisor runs it (under sudo with become)."""
        if not self.become:
            return argv
        return ['sudo', '-n'] + (['-u', self.become_user] if self.become_user else []) + ['--'] + list(argv)

    def call(self, command):
        """(rc, stdout, stderr) of ``command`` on the hypervisor, or HostFailed for SSH's own failures."""
        argv = self.argv(command)
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    start_new_session=True)
        except OSError as err:
            raise HostFailed('%s cannot run: %s' % (argv[0], one_line(err.strerror or err)))
        try:
            out, err = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                pass  # a descendant that left the process group still holds the pipes
            raise HostFailed('no answer within %d s (timeout)' % self.timeout)
        out, err = to_text(out, errors='surrogate_or_replace'), to_text(err, errors='surrogate_or_replace')
        if proc.returncode == 255 and not self.local:
            line = one_line(last_line(err)) or 'ssh exited 255 without a message'
            raise HostFailed(line if line.startswith('ssh') else 'ssh: ' + line)
        if proc.returncode == 127 and self.command in err:
            raise HostFailed(ENGINE_MISSING.format(command=self.command))
        if proc.returncode != 0 and self.become and last_line(err).startswith('sudo:'):
            raise HostFailed(one_line(last_line(err)))
        return proc.returncode, out, err


class Runner(object):
    """``run_command`` for the Engine class: the listing over SSH; the snapshot lists recorded,
    then all asked in one SSH call, then answered from it."""

    def __init__(self, hypervisor):
        self.hypervisor = hypervisor
        self.listing = None
        self.asked = []
        self.answers = None

    def run_command(self, argv, data=None):
        if argv[2] == 'list':
            if self.listing is None:
                self.listing = self.hypervisor.call(remote_command(self.hypervisor.wrap(argv)))
            return self.listing
        if self.answers is None:
            self.asked.append(list(argv))
            return 0, '[]', ''
        return self.answers[tuple(argv)]

    def ask_recorded(self):
        """Every recorded command in one call: each one's output, then a line with a marker
        no answer can contain and its exit status."""
        marker = 'ferry-inventory-%s' % secrets.token_hex(8)
        script = '; '.join('%s 2>&1; printf "\\n%s %%d\\n" "$?"' % (remote_command(self.hypervisor.wrap(argv)), marker)
                           for argv in self.asked)
        rc, out, err = self.hypervisor.call(script)
        answers, lines = {}, []
        for line in out.split('\n'):
            if line.startswith(marker + ' ') and len(answers) < len(self.asked):
                status = int(line.split()[-1]) if line.split()[-1].isdigit() else 1
                text = '\n'.join(lines)
                answers[tuple(self.asked[len(answers)])] = (status, text, '') if status == 0 else (status, '', text)
                lines = []
            else:
                lines.append(line)
        if len(answers) < len(self.asked):
            raise HostFailed('the snapshot lists ended early (exit %d): %s' % (rc, one_line(last_line(err) or last_line(out))))
        self.answers = answers


class RemoteEngine(Engine):
    """The Engine of module_utils, its command run on a hypervisor through ``runner``."""

    def __init__(self, runner, hypervisor):  # pylint: disable=super-init-not-called
        self.module = runner
        self.command = hypervisor.command
        self.state_dir = hypervisor.state_dir

    def snapshots(self, name):
        try:
            return super(RemoteEngine, self).snapshots(name)
        except EngineError as err:
            if err.kind == NOT_FOUND:  # undefined between the listing and the snapshot list
                return []
            raise


def read_vms(hypervisor, snapshots):
    """The hypervisor's VMs as vm_info describes them (and their uptime), or HostFailed."""
    runner = Runner(hypervisor)
    engine = RemoteEngine(runner, hypervisor)
    try:
        vms = engine.list_vms()
        if not isinstance(vms, list) or not all(isinstance(vm, dict) and isinstance(vm.get('name'), str)
                                                and isinstance(vm.get('state'), str) for vm in vms):
            raise HostFailed('%s --json list did not answer a list of VMs' % hypervisor.command)
        params = {'name': [], 'snapshots': snapshots}
        if snapshots and vms:
            VmInfo(engine, params).apply()  # records the snapshot lists it needs
            runner.ask_recorded()
        described = VmInfo(engine, params).apply()['vms']
    except EngineError as err:
        raise HostFailed(one_line(err))
    now = time.time()
    for vm in described:
        started = vm.get('started_at')
        active = vm['state'] in ACTIVE and isinstance(started, (int, float)) and not isinstance(started, bool)
        vm['uptime'] = int(max(now - started, 0)) if active else None
    return described


def rank(vm):
    """Which copy of a VM on several hypervisors wins: lower first."""
    migration = vm.get('migration') or {}
    if isinstance(migration, dict) and migration.get('phase') == 'committed':
        return 3  # this copy is on its way out
    return ACTIVE.index(vm['state']) if vm['state'] in ACTIVE else 2


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):

    NAME = NAME

    def verify_file(self, path):
        return (super(InventoryModule, self).verify_file(path)
                and path.endswith(('.ferry.yml', '.ferry.yaml')))

    def parse(self, inventory, loader, path, cache=True):
        super(InventoryModule, self).parse(inventory, loader, path, cache=cache)
        self._read_config_data(path)
        existing = set(inventory.hosts)

        cache_key = self.get_cache_key(path)
        use_cache = self.get_option('cache') and cache
        update_cache = self.get_option('cache') and not cache
        found = None
        if use_cache:
            try:
                found = self._cache[cache_key]
            except KeyError:
                update_cache = True
            if found is not None and (not isinstance(found, dict) or found.get('format') != CACHE_FORMAT):
                found, update_cache = None, True
        cached = found is not None
        if found is None:
            found = self.ask(self.hypervisors())
        if update_cache:
            self._cache[cache_key] = found
        self.populate(found, existing, cached)

    # --- the hypervisors ---

    def engine_options(self):
        keys = ('engine_venv', 'state_dir', 'ssh_executable', 'ssh_config', 'become', 'timeout')
        options = dict((key, self.get_option(key)) for key in keys)
        for key in ('timeout', 'max_workers'):
            if self.get_option(key) < 1:
                raise AnsibleParserError('%s: %r is not a number of at least 1' % (key, self.get_option(key)))
        try:
            options['ssh_args'] = split_args(self.get_option('ssh_args'), 'ssh_args')
            checked_path(options['ssh_executable'], 'ssh_executable')
            checked_path(options['engine_venv'], 'engine_venv', absolute=True)
            if options['state_dir'] is not None:
                checked_path(options['state_dir'], 'state_dir', absolute=True)
            if options['ssh_config'] is not None:
                checked_path(options['ssh_config'], 'ssh_config')
        except BadValue as err:
            raise AnsibleParserError(to_native(err))
        return options

    def hypervisors(self):
        """[(name, Hypervisor or the reason it is skipped)], in the order given."""
        options = self.engine_options()
        listed = []
        for index, entry in enumerate(self.get_option('hosts')):
            where = 'hosts[%d]' % index
            if isinstance(entry, str):
                entry = {'name': entry}
            if not isinstance(entry, dict) or 'name' not in entry:
                raise AnsibleParserError('%s: %s is neither a host name nor a dictionary with a name' % (where, shown(entry)))
            unknown = sorted(set(entry) - set(KNOWN_KEYS))
            if unknown:
                raise AnsibleParserError('%s: unknown key %s (known: %s)' % (where, shown(unknown[0]), ', '.join(KNOWN_KEYS)))
            try:
                hypervisor = Hypervisor(entry['name'], entry, options, where)
            except BadValue as err:
                raise AnsibleParserError(to_native(err))
            if hypervisor.name in [pair[0] for pair in listed]:
                raise AnsibleParserError('%s: %s is listed twice' % (where, shown(hypervisor.name)))
            listed.append((hypervisor.name, hypervisor))
        group = self.get_option('hosts_from_group')
        if group:
            names = [pair[0] for pair in listed]
            for host in self.group_hosts(group):
                if host.name in names:
                    continue
                names.append(host.name)
                try:
                    listed.append((host.name, Hypervisor(host.name, self.host_variables(host), options, host.name)))
                except BadValue as err:
                    listed.append((host.name, to_native(err)))
                except Exception as err:  # pylint: disable=broad-except
                    # a template in its variables that does not render
                    listed.append((host.name, '%s: %s' % (host.name, one_line(to_native(err)))))
        if not listed:
            raise AnsibleParserError('no hypervisors: list them in hosts, or name their group in hosts_from_group')
        return listed

    def group_hosts(self, name):
        group = self.inventory.groups.get(name)
        if group is None:
            raise AnsibleParserError('hosts_from_group: the inventory has no group %s yet (its source must come '
                                     'before this one)' % shown(name))
        return group.get_hosts()

    def host_variables(self, host):
        """The host's variables as the inventory has them so far, templates rendered."""
        variables = combine_vars(get_group_vars(host.get_groups()), host.get_vars())
        if self.get_option('use_vars_plugins'):
            from ansible.vars.plugins import get_vars_from_inventory_sources
            sources = getattr(self.inventory, 'processed_sources', [])
            variables = combine_vars(variables, get_vars_from_inventory_sources(self.loader, sources, host.get_groups(), 'all'))
            variables = combine_vars(variables, get_vars_from_inventory_sources(self.loader, sources, [host], 'all'))
        variables.setdefault('inventory_hostname', host.name)
        wanted = [name for name in KNOWN_KEYS if name != 'name']
        templar = self.templar
        templar.available_variables = variables
        resolved = {}
        for name in wanted:
            value = variables.get(name)
            if isinstance(value, str) and templar.is_template(value):
                value = templar.template(value)
            resolved[name] = value
        return resolved

    def ask(self, hypervisors):
        """Every hypervisor asked, in parallel: {'format', 'hypervisors': [{'name', 'vms' or 'failed'}]}."""
        snapshots = self.get_option('snapshots')
        results = {}
        usable = [(name, hypervisor) for name, hypervisor in hypervisors if isinstance(hypervisor, Hypervisor)]
        if usable:
            workers = min(self.get_option('max_workers'), len(usable))
            with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
                futures = dict((pool.submit(read_vms, hypervisor, snapshots), name) for name, hypervisor in usable)
                for future in concurrent.futures.as_completed(futures):
                    name = futures[future]
                    try:
                        results[name] = {'name': name, 'vms': future.result()}
                    except HostFailed as err:
                        results[name] = {'name': name, 'failed': to_native(err)}
                    except Exception as err:  # pylint: disable=broad-except
                        results[name] = {'name': name, 'failed': 'unexpected error: %s' % one_line(repr(err))}
        for name, hypervisor in hypervisors:
            if not isinstance(hypervisor, Hypervisor):
                results[name] = {'name': name, 'failed': hypervisor}
        return {'format': CACHE_FORMAT, 'hypervisors': [results[pair[0]] for pair in hypervisors]}

    # --- the VMs ---

    def populate(self, found, existing, cached):
        copies = {}
        order = []
        for hypervisor in found['hypervisors']:
            if 'failed' in hypervisor:
                display.warning('%s: skipped hypervisor %s: %s%s' % (
                    NAME, hypervisor['name'], hypervisor['failed'], ' (from the cache)' if cached else ''))
                continue
            for vm in hypervisor['vms']:
                if not isinstance(vm.get('name'), str) or not VM_NAME.fullmatch(vm['name']):
                    display.warning('%s: skipped a VM of %s: %s is not a VM name' % (NAME, hypervisor['name'], shown(vm.get('name'))))
                    continue
                if vm['name'] not in copies:
                    order.append(vm['name'])
                copies.setdefault(vm['name'], []).append((hypervisor['name'], vm))
        strict = self.get_option('strict')
        for name in order:
            if name in existing:
                display.warning('%s: skipped VM %s of %s: the inventory already has a host of that name'
                                % (NAME, name, ', '.join(copy[0] for copy in copies[name])))
                continue
            ranked = sorted(copies[name], key=lambda copy: rank(copy[1]))  # stable: the order given breaks ties
            host, vm = ranked[0]
            others = [{'host': other, 'state': copy['state']} for other, copy in ranked[1:]]
            if others:
                display.warning('%s: VM %s is on %s; the inventory has the copy on %s (%s)' % (
                    NAME, name, ', '.join('%s (%s)' % (other, copy['state']) for other, copy in copies[name]),
                    host, vm['state']))
            self.add_vm(name, host, vm, others, strict)

    def add_vm(self, name, host, vm, others, strict):
        self.inventory.add_host(name)
        variables = dict(('ferry_' + key, value) for key, value in vm.items() if key != 'name')
        variables.update(ferry_host=host, ferry_duplicates=others)
        for key, value in sorted(variables.items()):
            # What the engine says (a guest's error message, a command line) is data, never a template.
            self.inventory.set_variable(name, key, wrap_var(value))
        if self.get_option('default_groups'):
            for group in ('ferry_vms', 'ferry_host_' + host, 'ferry_state_' + vm['state']):
                self.inventory.add_child(self.inventory.add_group(self._sanitize_group_name(group)), name)
        hostvars = self.inventory.get_host(name).get_vars()
        self._set_composite_vars(self.get_option('compose'), hostvars, name, strict=strict)
        hostvars = self.inventory.get_host(name).get_vars()
        self._add_host_to_composed_groups(self.get_option('groups'), hostvars, name, strict=strict)
        self._add_host_to_keyed_groups(self.get_option('keyed_groups'), hostvars, name, strict=strict)
