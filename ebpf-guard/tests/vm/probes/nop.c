/* nop: exits 0 at once; the small static binary bench's fork+exec loop runs. */
int main(void)
{
	return 0;
}
