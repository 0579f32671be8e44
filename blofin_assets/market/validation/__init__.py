"""The gate every candle batch passes before it is stored: ``batch.validate_candles`` (the
rules, in its docstring), with the text parsing it shares with the file reader
(``text_parsing``), the checks across an instrument's rows (``series_checks``) and the
rejection report (``rejections``)."""
