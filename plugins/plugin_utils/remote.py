# -*- coding: utf-8 -*-
# Copyright: Ferry Developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Running a module on another inventory host from inside an action plugin, through that
host's own connection: its connection type, address, user, keys, SSH arguments (and so the
operator's ssh config, agent and jump hosts) and become settings, all as its inventory gives
them, exactly as if a task ran there.

ansible-core builds a task's connection in its task executor; an action plugin that spans two
hosts (a migration prepares the destination, then moves the VM from the source) builds the
second one the same way here: a play context for the other host, its connection, shell and
become plugins with their options read from that host's variables.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible import constants as C
from ansible.errors import AnsibleError


def _options(plugin_type, name, variables):
    """The plugin's options that the host's variables set (already templated by hostvars)."""
    options = {}
    for variable in C.config.get_plugin_vars(plugin_type, name):
        if variable in variables:
            options[variable] = variables[variable]
    return options


class RemoteHost(object):
    """``host`` of the inventory, reached from the action plugin ``action`` of the current task."""

    def __init__(self, action, host, task_vars):
        self.action = action
        self.host = host
        hostvars = task_vars.get('hostvars', {})
        if host not in hostvars:
            raise AnsibleError('to: %r is not a host of the inventory' % host)
        self.variables = dict(hostvars[host])
        self.variables.setdefault('inventory_hostname', host)
        self.variables.setdefault('ansible_host', host)
        self._runner = None

    def _connect(self):
        action = self.action
        loader = action._shared_loader_obj
        play_context = action._play_context.set_task_and_variable_override(
            task=action._task, variables=self.variables, templar=action._templar)
        play_context.remote_addr = self.variables['ansible_host']
        kind = self.variables.get('ansible_connection') or play_context.connection or 'ssh'
        if kind in ('smart', 'persistent'):
            kind = 'ssh'
        connection = loader.connection_loader.get(kind, play_context, new_stdin=None)
        if connection is None:
            raise AnsibleError('to: the connection plugin %r of host %s was not found' % (kind, self.host))
        task_keys = action._task.dump_attrs()
        task_keys['timeout'] = play_context.timeout
        task_keys.pop('retries', None)
        connection.set_options(task_keys=task_keys, var_options=_options('connection', connection._load_name,
                                                                         self.variables))
        connection._shell.set_options(var_options=_options('shell', connection._shell._load_name, self.variables))
        self._set_become(connection, play_context, task_keys)
        play_context.set_attributes_from_plugin(connection)
        return play_context, connection

    def _set_become(self, connection, play_context, task_keys):
        if not play_context.become:
            return
        become = self.action._shared_loader_obj.become_loader.get(play_context.become_method)
        if become is None:
            raise AnsibleError('to: the become method %r was not found' % play_context.become_method)
        become.set_options(task_keys=task_keys, var_options=_options('become', become._load_name, self.variables))
        connection.set_become_plugin(become)
        play_context.set_become_plugin(become.name)

    def runner(self):
        """A 'normal' action bound to the host's connection, to run modules with."""
        if self._runner is None:
            play_context, connection = self._connect()
            action = self.action
            self._runner = action._shared_loader_obj.action_loader.get(
                'ansible.legacy.normal', task=action._task.copy(), connection=connection,
                play_context=play_context, loader=action._loader, templar=action._templar,
                shared_loader_obj=action._shared_loader_obj)
        return self._runner

    def run(self, module, args):
        """The result of ``module`` with ``args`` on the host."""
        runner = self.runner()
        variables = dict(self.variables)
        return runner._execute_module(module_name=module, module_args=args, task_vars=variables)

    def close(self):
        if self._runner is not None:
            try:
                self._runner._connection.close()
            except Exception:  # pylint: disable=broad-except
                pass  # the connection may never have opened
