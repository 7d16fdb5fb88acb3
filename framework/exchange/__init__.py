"""Getting a pipeline in and out of other programs: CSV files from spreadsheets and other CRMs
(`tables`, `profiles`, `importing`, `exporting`) and the phone's calendar and address book
(`phone`).  No command line here: `salesmgr.cli.exchange` and the web pages call these."""
