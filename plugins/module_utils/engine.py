# -*- coding: utf-8 -*-
# Copyright: Ferry Developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""The Ferry engine as seen from a module running on the managed host.

Modules run under the host's ``ansible_python_interpreter``, which is usually
not the engine's virtual environment, so the engine is looked for there too.
Every engine failure reaches modules as one ``EngineError`` with the engine's
one-line message.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import glob
import os
import site
import sys

DEFAULT_VENV = '/opt/ferry/venv'
ENGINE_MISSING = ('the Ferry engine is not installed on this host ({where}): '
                  'run the ferry.hypervisor.engine role')
ENGINE_BROKEN = ('the Ferry engine on this host cannot be imported ({error}): '
                 'run the ferry.hypervisor.engine role to reinstall it')


class EngineError(Exception):
    """A failure explained in one line: the engine's message, or a refusal naming the parameter."""


class EngineApi(object):
    """The parts of the ``ferry`` package modules use."""

    def __init__(self, host_class, error_class, validate, seconds):
        self.Host = host_class
        self.Error = error_class
        self.validate = validate
        self.seconds = seconds


def _venv_site_packages(venv):
    version = 'python%d.%d' % sys.version_info[:2]
    return [path for path in glob.glob(os.path.join(venv, 'lib', 'python*', 'site-packages'))
            if os.path.basename(os.path.dirname(path)) == version]


def _import_api():
    from ferry.errors import FerryError
    from ferry.inputs import seconds
    from ferry.store.definition import validate
    from ferry.host.api import Host
    return EngineApi(Host, FerryError, validate, seconds)


def _use_site_packages(paths):
    for path in paths:
        site.addsitedir(path)
    # The engine starts each VM under its venv's interpreter when it has one, else as
    # "sys.executable -m ferry.vmprocess.main": that one must find the engine as this one now does.
    inherited = os.environ.get('PYTHONPATH')
    os.environ['PYTHONPATH'] = os.pathsep.join(paths + ([inherited] if inherited else []))


def _try_import():
    """The API, or None when there is no ``ferry`` package to import."""
    try:
        return _import_api()
    except ImportError as err:
        if isinstance(err, ModuleNotFoundError) and err.name == 'ferry':
            return None
        # The engine is there but one of its own imports fails.
        raise EngineError(ENGINE_BROKEN.format(error=err))


def load_api(venv=None):
    """Import the engine: from this Python, else from the engine's virtual environment."""
    api = _try_import()
    if api is not None:
        return api
    venv = venv or DEFAULT_VENV
    paths = _venv_site_packages(venv)
    if paths:
        _use_site_packages(paths)
        api = _try_import()
        if api is not None:
            return api
    where = 'no module ferry for %s, none in %s' % (sys.executable, venv)
    raise EngineError(ENGINE_MISSING.format(where=where))


class Engine(object):
    """One host's VMs through the engine's ``Host`` API, failures as ``EngineError``."""

    def __init__(self, api, state_dir=None):
        self.api = api
        self.host = self._call(api.Host, state_dir)

    @classmethod
    def open(cls, state_dir=None, venv=None):
        return cls(load_api(venv), state_dir)

    def _call(self, function, *args, **kwargs):
        try:
            return function(*args, **kwargs)
        except (self.api.Error, OSError) as err:
            raise EngineError(str(err))

    def validate(self, values):
        """The definition the engine would store for ``values`` (a dict), or EngineError."""
        return self._call(self.api.validate, values).to_dict()

    def check_seconds(self, value, field):
        """A duration option, checked by the engine's own rule (so check mode refuses it too)."""
        return self._call(self.api.seconds, value, field, zero=True)

    def get(self, name):
        return self._call(self.host.get, name)

    def define(self, values):
        return self._call(self.host.define, values, replace=True)

    def start(self, name):
        return self._call(self.host.start, name)

    def stop(self, name, timeout):
        # stop_timeout is documented as "then power off": the module always forces.
        return self._call(self.host.stop, name, timeout, force=True)

    def poweroff(self, name, timeout):
        return self._call(self.host.poweroff, name, timeout)

    def pause(self, name):
        return self._call(self.host.pause, name)

    def resume(self, name):
        return self._call(self.host.resume, name)

    def undefine(self, name):
        # state=absent is documented to remove the VM's folder, snapshots included.
        return self._call(self.host.undefine, name, with_snapshots=True)
