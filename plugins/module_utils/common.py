# -*- coding: utf-8 -*-
# Copyright: Ferry Developers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""What every Ferry module shares: the engine options (documented by the
``ferry.hypervisor.engine`` doc fragment), opening the host's engine, and the one funnel
from engine failures to ``fail_json``.

A module is a manager class, ``Manager(engine, params, check_mode)`` with ``apply()``
returning the result (``changed``, facts, ``diff``, ``warnings``) and ``done`` listing the
changes already made, so that a failure half way reports ``changed`` truly.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.ferry.hypervisor.plugins.module_utils.engine import (
    DEFAULT_VENV, Engine, EngineError, EngineMissing, NotInstalledYet)

# Paired with plugins/doc_fragments/engine.py.
ENGINE_OPTIONS = dict(
    state_dir=dict(type='path'),
    engine_venv=dict(type='path', default=DEFAULT_VENV),
)


def argument_spec(**options):
    """A module's own options and the engine options every module takes."""
    spec = dict(ENGINE_OPTIONS)
    spec.update(options)
    return spec


def open_engine(module, predict_without_engine=True):
    """The host's engine; in check mode on a host without one yet, a stand-in that predicts
    (unless the module only reads: then there is nothing to predict from)."""
    try:
        return Engine(module, module.params['state_dir'], module.params['engine_venv'])
    except EngineMissing:
        if module.check_mode and predict_without_engine:
            return NotInstalledYet()
        raise


def run(module, manager_class, predict_without_engine=True):
    """Apply ``manager_class`` to ``module.params``; every failure becomes one fail_json message."""
    manager = None
    try:
        engine = open_engine(module, predict_without_engine)
        manager = manager_class(engine, module.params, module.check_mode)
        result = manager.apply()
    except EngineError as err:
        module.fail_json(msg=str(err), changed=bool(manager and manager.done), error_kind=err.kind)
    else:
        for warning in result.pop('warnings', []):
            module.warn(warning)
        module.exit_json(**result)
