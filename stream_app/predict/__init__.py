"""The predictive layer: BG/NBD purchase counts and Gamma-Gamma spend, fitted on transactions.

Sources: Fader, Hardie & Lee (2005), "'Counting your customers' the easy way" (BG/NBD), and Fader,
Hardie & Lee (2005), "The Gamma-Gamma model of monetary value". See docs/predictive.md.
"""

from .bgnbd import (
    BGNBDParams,
    InsufficientData,
    conditional_expected_purchases,
    expected_purchases,
    fit_bgnbd,
    p_alive,
)
from .fit_command import add_fit_arguments, run_fit
from .gamma_gamma import GammaGammaParams, discounted_clv, expected_average_spend, fit_gamma_gamma
from .model_file import ModelFileError, PredictiveModel, load_model, save_model
from .readers import Transaction, TransactionFileError, read_transactions
from .report import HoldoutRow, holdout_table, write_report
from .summary import CustomerSummary, summarize_transactions

__all__ = [
    "BGNBDParams",
    "CustomerSummary",
    "GammaGammaParams",
    "HoldoutRow",
    "InsufficientData",
    "ModelFileError",
    "PredictiveModel",
    "Transaction",
    "TransactionFileError",
    "add_fit_arguments",
    "conditional_expected_purchases",
    "discounted_clv",
    "expected_average_spend",
    "expected_purchases",
    "fit_bgnbd",
    "fit_gamma_gamma",
    "holdout_table",
    "load_model",
    "p_alive",
    "read_transactions",
    "run_fit",
    "save_model",
    "summarize_transactions",
    "write_report",
]
