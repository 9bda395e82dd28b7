"""Privacy, in one room: mechanisms, accountants, the client's secret and its release journal.

- `mechanisms`: what a release does to a value (randomised response, bounded Laplace, label
  randomised response with a prior, Gaussian vote histograms), each a small class that also gives
  its privacy loss distribution; a new mechanism is one class.
- `accounting`: composition (dp-accounting's privacy loss distributions, fine enough at small
  epsilon), budgets, Gaussian calibration for DPSDA-FL and the DP-SGD cross-check.
- `secret`: the client's own secret (OS entropy), from which every noise draw is derived; the server
  never holds it, so nothing it holds predicts a draw.
- `client`: the client side: its secret, journal and budget (`ClientPrivacy`), and the wrapper that
  releases every value an expert sends through them (`PrivateExpert`).
- `plan`: the one place that reads the config's ``privacy`` section and says what runs where.

numpy and dp-accounting only (dp-accounting imported lazily): no torch, no framework.
"""
