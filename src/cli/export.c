/* prepack export: a shard set into another trainer's packed format. The
 * formats are Arrow, Parquet and numpy files, written by the Python
 * package (prepack.export, docs/EXPORT.md) with pyarrow and numpy: this
 * command hands its arguments to `python -m prepack export`, so there is
 * one implementation of each format. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static const char export_help[] =
    "usage: prepack export SET --to FORMAT -o OUT\n"
    "\n"
    "Write the shard set SET (full or plan-only) as another trainer's packed\n"
    "data in OUT (written under a temporary name, renamed when complete):\n"
    "  hf, hf-parquet   a Hugging Face dataset (save_to_disk, or Parquet)\n"
    "                   with TRL's packed columns input_ids, seq_lengths\n"
    "                   and labels, for its padding-free collator\n"
    "  nemo-npy         NeMo 2's training_L.npy (a pickled object array:\n"
    "                   np.load(..., allow_pickle=True)) and L_metadata.jsonl\n"
    "  nemo-parquet     Megatron-Bridge's training_L.idx.parquet\n"
    "                   (input_ids, loss_mask, seq_start_id)\n"
    "See docs/EXPORT.md for each format and the code it was matched to.\n"
    "\n"
    "The formats are written by the Python package (prepack.export, with\n"
    "pyarrow and numpy): this command runs `$PREPACK_PYTHON -m prepack\n"
    "export` (default python3), which must import prepack.\n"
    "\n"
    "Options:\n"
    "  --to FORMAT      hf | hf-parquet | nemo-npy | nemo-parquet\n"
    "  -o, --output OUT the export's directory (must not hold anything)\n"
    "  -h, --help       show this help\n"
    "\n"
    "Exit status: 0 success, 1 bad input or I/O error, 2 usage error.\n";

int cmd_export(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            fputs(export_help, stdout);
            return EXIT_OK;
        }
    if (argc < 2)
        return usage_error("export", "give a shard set, --to FORMAT and -o OUT");
    const char *python = getenv("PREPACK_PYTHON");
    if (!python || !*python)
        python = "python3";
    char **args = calloc((size_t)argc + 4, sizeof *args);
    if (!args) {
        fputs("prepack export: out of memory\n", stderr);
        return EXIT_DATA;
    }
    char m[] = "-m", mod[] = "prepack", sub[] = "export";
    args[0] = (char *)python;
    args[1] = m;
    args[2] = mod;
    args[3] = sub;
    for (int i = 1; i < argc; i++)
        args[3 + i] = argv[i];
    fflush(NULL);
    execvp(python, args);
    fprintf(stderr,
            "prepack export: cannot run %s: %s (the formats are written by "
            "the Python package; set PREPACK_PYTHON to an interpreter that "
            "imports prepack)\n",
            python, strerror(errno));
    free(args);
    return EXIT_DATA;
}
