/*
 * A GNU make plugin with one function, $(lab-exit N): when N is non-zero it
 * ends make with exit status N. GNU make reports 2 for any failed recipe;
 * `make lab CMD=...` uses this to exit with the lab command's own status.
 */
#include <gnumake.h>
#include <stdlib.h>

int plugin_is_GPL_compatible;

static char *lab_exit(const char *name, unsigned int argc, char **argv)
{
	int status = atoi(argv[0]);

	(void)name;
	(void)argc;
	if (status != 0)
		exit(status);
	return NULL;
}

int makeexit_gmk_setup(const gmk_floc *floc)
{
	(void)floc;
	gmk_add_function("lab-exit", lab_exit, 1, 1, GMK_FUNC_DEFAULT);
	return 1;
}
